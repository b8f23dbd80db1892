"""The TRSP loop: stage 1 (learn gates with an l1 penalty, prune the smallest, repeat),
stage 2 (push the selected layers toward identity), then delete them.

Every choice the paper leaves open is a field of `TRSPConfig`; `profiles.py` holds named sets
(the measured default, the literal reading of the paper, the paper's GPU settings).
"""
from __future__ import annotations

import copy
import hashlib
import itertools
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from .. import results
from ..surgery import distributed
from .config import Budget, TRSPConfig, budget, config_key, layers_to_remove
from ..surgery.devices import input_device
from ..surgery.gating import Gating, attach_gates, detach_gates
from ..log import progress, quiet
from .losses import identity_penalty, l1_scales, relative_gap
from ..surgery.removal import remove_layers
from .training import TrainingDiverged, autocast, optimizers, Trainer, layer_index, batch_stream, finetune, kd_objective

__all__ = ["TRSPConfig", "TRSPResult", "TrainingDiverged", "config_key", "layers_to_remove",
           "Budget", "budget", "batch_stream", "finetune", "prune", "stage1", "stage2", "measure_identity_gap"]


@dataclass
class TRSPResult:
    """What a run produced.  `model` is the pruned model."""

    removed: list[int]                   # in selection order, original indices
    kept: list[int]
    n_layers: int
    final_scales: list[float]            # s_i at the end of stage 2, original indices
    identity_gap: dict[int, float]       # ||X_out - X_in|| / ||X_in|| per removed layer, end of stage 2
    trajectory: list[dict]               # one row per optimizer step: stage, round, step, losses, scales
    timings: dict[str, float]
    config: dict
    model: nn.Module | None = field(default=None, repr=False)


def candidates(n_layers: int, cfg: TRSPConfig) -> list[int]:
    return list(range(cfg.protect_first, n_layers - cfg.protect_last))


def select_smallest(scales: torch.Tensor, pool: list[int], k: int) -> list[int]:
    """The k candidates with the smallest raw scale (as in the released code), ties to the lower index."""
    return sorted(pool, key=lambda i: (float(scales[i]), i))[:k]


def stage1(trainer: Trainer, n: int, pool: list[int]) -> list[int]:
    """Learn the scales under LM + lambda1 * sum|s_alive|; each round the smallest candidate joins P."""
    cfg, gating = trainer.cfg, trainer.gating
    rounds = 1 if cfg.one_shot else n
    steps = cfg.steps_per_round * (n if cfg.one_shot else 1)
    selected: list[int] = []
    train_all = cfg.stage1_train == "all"
    with progress(total=rounds * steps, desc=f"stage 1: select {n} layers") as bar:
        for r in range(rounds):
            opts = optimizers(trainer.model, gating, cfg, lambda name: train_all, steps)
            alive = [i for i in range(gating.n_layers) if i not in gating.skipped]

            def reg(_k: int, alive: list[int] = alive) -> torch.Tensor:
                return cfg.lambda1 * l1_scales(gating.scales, alive)

            trainer.run(1, steps, *opts, regularizer=reg, round_=r, bar=bar)
            s = distributed.from_main(gating.scales.detach()).float().cpu()
            take = select_smallest(s, [i for i in pool if i not in selected], n if cfg.one_shot else 1)
            selected.extend(take)
            gating.skip(take)
            if not quiet():  # the book's kernels are quiet: the selection is in the result's trajectory
                bar.write(f"  round {r + 1}: removed layer(s) {take}  (s = {', '.join(f'{s[i]:.3f}' for i in take)})")
    return selected


#: TRSPConfig fields that only stage 2 (or what follows it) reads: runs that differ only in these share stage 1.
STAGE2_FIELDS = frozenset({"lambda2", "norm", "stage2_steps", "stage2_mode", "stage2_penalty", "stage2_fade",
                           "fade_fraction", "lambda2_warmup", "stage2_train", "stage2_loss", "kd_temperature",
                           "heal_last", "fold_scales"})
#: Stage-1 outcomes of this process by `stage1_key`, least recently used first: a stage-2 ablation or a stage-2
#: knob of the search selects once, not once per row. An entry is the scales, the trajectory and the RNG state
#: (kilobytes), as JSON values; a reused outcome is exactly the computed one, so a row's result never depends on what
#: ran before. With a `stage1_store` (a comparison passes the `stage1/` beside its rows) the outcomes also
#: live on disk, shared by the workers of a regeneration and by its later sessions.
STAGE1_MEMO: dict[str, dict] = {}
STAGE1_MEMO_SIZE = 64


def stage1_key(model: nn.Module, calib: torch.Tensor, cfg: TRSPConfig, pool: list[int]) -> str | None:
    """What determines stage 1's outcome: every field but stage 2's, the pool, the calibration ids and the model's
    weights (hashed). None where stage 1 is not reusable: it trains the weights (`stage1_train="all"`), or it runs
    sharded over processes."""
    if cfg.stage1_train == "all" or distributed.active():
        return None
    h = hashlib.sha1(repr(({k: v for k, v in asdict(cfg).items() if k not in STAGE2_FIELDS}, pool)).encode())
    for t in itertools.chain([calib], (p.detach() for p in model.state_dict().values())):
        h.update(t.cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _outcome(trainer: Trainer, selected: list[int]) -> dict:
    """What stage 1 leaves in `trainer`, as JSON values (float32 scales and RNG bytes round-trip exactly)."""
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    return {"selected": list(selected), "scales": trainer.gating.scales.detach().cpu().tolist(),
            "trajectory": copy.deepcopy(trainer.trajectory), "step": trainer.step,
            "rng": torch.get_rng_state().tolist(),
            "cuda_rng": [s.tolist() for s in torch.cuda.get_rng_state_all()] if cuda else None}


def stage1_memo(trainer: Trainer, n: int, pool: list[int], key: str | None,
                store: Path | None = None) -> tuple[list[int], bool]:
    """`stage1`, or its remembered outcome under `key` (in this process's memo, else in `store`) restored into
    `trainer` exactly as stage 1 leaves it (scales, skipped layers, trajectory, step, batch stream position, RNG
    state). (selected, whether it was reused)."""
    if not key:
        return stage1(trainer, n, pool), False
    memo, ran = STAGE1_MEMO.pop(key, None), []
    if memo is None:
        run = lambda: _outcome(trainer, ran.append(stage1(trainer, n, pool)) or ran[0])  # noqa: E731
        memo = results.stored(store / f"{key}.json", key, run) if store is not None else run()
    STAGE1_MEMO[key] = memo  # now the most recently used
    while len(STAGE1_MEMO) > STAGE1_MEMO_SIZE:
        STAGE1_MEMO.pop(next(iter(STAGE1_MEMO)))
    if ran:
        return ran[0], False
    with torch.no_grad():
        trainer.gating.scales.copy_(torch.tensor(memo["scales"], dtype=trainer.gating.scales.dtype))
    trainer.gating.skip(memo["selected"])
    trainer.trajectory, trainer.step = copy.deepcopy(memo["trajectory"]), memo["step"]
    for _ in range(memo["step"] * trainer.cfg.grad_accum):  # stage 1 drew grad_accum micro-batches a step
        next(trainer.batches)
    torch.set_rng_state(torch.tensor(memo["rng"], dtype=torch.uint8))
    if memo.get("cuda_rng") and torch.cuda.is_available():  # stage 2's dropout, if a model had any, draws from it
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in memo["cuda_rng"]])
    return list(memo["selected"]), True


def stage2(trainer: Trainer, selected: list[int]) -> None:
    """Train LM + lambda2 * sum_P ||X_out - X_in|| with P active, so P's layers become identities.

    The switches of the ablations are the helpers below: which groups train (`_stage2_groups`:
    all of P at once, or one layer at a time), which weights (`_trains`), the lambda2 warm-up
    (`_lambda2`), the fade of P's gates to 0 (`_fade`), and the penalty (`losses.identity_penalty`)."""
    cfg, gating = trainer.cfg, trainer.gating
    if cfg.stage2_steps == 0 or not selected:
        return
    start = {i: gating.scales[i].item() for i in selected}
    trains = _trains(cfg, selected)
    with progress(total=cfg.stage2_steps, desc=f"stage 2: {cfg.stage2_mode} over {len(selected)} layers") as bar:
        for group, steps in _stage2_groups(cfg, selected):

            def penalty(k: int, group=group, steps=steps) -> torch.Tensor:
                return _lambda2(cfg, k, steps) * identity_penalty(gating, group, cfg.norm, cfg.stage2_penalty)

            with gating.running(group), gating.capturing(group):
                trainer.run(2, steps, *optimizers(trainer.model, gating, cfg, trains, steps), regularizer=penalty,
                            before_step=_fade(cfg, gating, group, start, steps), bar=bar,
                            frozen_gates=group if cfg.stage2_fade else None)


def _stage2_groups(cfg: TRSPConfig, selected: list[int]) -> list[tuple[list[int], int]]:
    """(layers, steps) per stage-2 phase: P jointly, or ("sequential") each layer with its share of the steps."""
    groups = [selected] if cfg.stage2_mode == "joint" else [[i] for i in selected]
    steps = [cfg.stage2_steps // len(groups) + (1 if g < cfg.stage2_steps % len(groups) else 0)
             for g in range(len(groups))]
    return [(g, s) for g, s in zip(groups, steps) if s > 0]


def _trains(cfg: TRSPConfig, selected: list[int]) -> Callable[[str], bool]:
    """Which weights train in stage 2: every one, or ("kept") all but the selected layers'."""
    frozen = set(selected) if cfg.stage2_train == "kept" else set()

    def trains(name: str) -> bool:
        idx = layer_index(name)
        return idx is None or idx not in frozen
    return trains


def _lambda2(cfg: TRSPConfig, k: int, steps: int) -> float:
    """lambda2 at step k, ramped up linearly over the first `lambda2_warmup` fraction of the phase."""
    warm = cfg.lambda2_warmup * steps
    return cfg.lambda2 * (min(1.0, (k + 1) / warm) if warm > 0 else 1.0)


def _fade(cfg: TRSPConfig, gating: Gating, group: list[int], start: dict[int, float],
          steps: int) -> Callable[[int], None]:
    """Before step k, set the group's gates on a line from their stage-1 value to 0 (reached after
    `fade_fraction` of the steps); a no-op without `stage2_fade`."""
    fade_steps = max(1, round(cfg.fade_fraction * steps))

    def fade(k: int) -> None:
        if cfg.stage2_fade:
            with torch.no_grad():
                for i in group:
                    gating.scales[i] = start[i] * max(0.0, 1.0 - (k + 1) / fade_steps)
    return fade


@torch.no_grad()
def measure_identity_gap(model: nn.Module, gating: Gating, layers: list[int], batch: torch.Tensor,
                         cfg: TRSPConfig) -> dict[int, float]:
    """||X_out - X_in|| / ||X_in|| of each layer in `layers`, on one calibration batch, P active."""
    with gating.running(layers), gating.capturing(layers):
        with autocast(cfg):
            model(input_ids=batch.to(input_device(model)))
        return {i: relative_gap(gating.diffs[i], gating.inputs[i]) for i in layers}


def prune(model: nn.Module, calib: torch.Tensor, cfg: TRSPConfig | None = None,
          teacher: nn.Module | None = None, stage1_store: Path | None = None) -> TRSPResult:
    """Run TRSP on `model` with calibration token ids `calib` [N, seq_len]; the model is pruned in place.
    A stage 1 this process (or, with a `stage1_store` folder, any process) already ran on the same model, data and
    stage-1 settings is reused (`stage1_memo`).

    `teacher`: the dense model for `stage2_loss="kd"` (default: a frozen copy of `model` taken here)."""

    from ..surgery.adapters import get_layers

    cfg = cfg or TRSPConfig()
    n_layers = len(get_layers(model))
    n = cfg.validate(n_layers)
    if calib.ndim != 2 or calib.shape[0] < cfg.batch_size:
        raise ValueError(f"calibration ids must be [N >= batch_size, seq_len], got {tuple(calib.shape)}")
    torch.manual_seed(cfg.seed)
    was_training = model.training
    model.train()
    model.config.use_cache = False
    t0 = time.perf_counter()
    if cfg.stage2_loss == "kd" and teacher is None:
        teacher = copy.deepcopy(model).requires_grad_(False)
    key = stage1_key(model, calib, cfg, candidates(n_layers, cfg))
    gating = attach_gates(model, cfg.gate)
    trainer = Trainer(model, gating, calib, cfg)
    try:
        selected, reused = stage1_memo(trainer, n, candidates(n_layers, cfg), key, stage1_store)
        t1 = time.perf_counter()
        if cfg.stage2_loss == "kd":
            trainer.objective = kd_objective(teacher, cfg.kd_temperature)
        stage2(trainer, selected)
        t2 = time.perf_counter()
        trainer.model.eval()
        gap = measure_identity_gap(trainer.model, gating, selected, calib[: cfg.batch_size], cfg)
        distributed.gather_into(trainer.model, model)  # the trained weights, into the plain model
    except BaseException:
        detach_gates(model, gating, fold=False)  # leave a plain (partly trained) model behind
        raise
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
    scales = gating.scales.detach().float().cpu().tolist()
    detach_gates(model, gating, fold=cfg.fold_scales, drop=set(selected))
    remove_layers(model, selected)
    model.config.use_cache = True
    model.train(was_training)
    t3 = time.perf_counter()
    return TRSPResult(
        removed=selected, kept=[i for i in range(n_layers) if i not in selected], n_layers=n_layers,
        final_scales=scales, identity_gap=gap, trajectory=trainer.trajectory,
        timings={"stage1_s": t1 - t0, "stage2_s": t2 - t1, "total_s": t3 - t0, "stage1_reused": reused},
        config=asdict(cfg), model=model)

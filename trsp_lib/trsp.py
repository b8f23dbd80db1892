"""The TRSP loop: stage 1 (learn gates with an l1 penalty, prune the smallest, repeat),
stage 2 (push the selected layers toward identity), then delete them.

Every choice the paper leaves open is a field of `TRSPConfig`; `profiles.py` holds named sets
(the measured default, the literal reading of the paper, the paper's GPU settings).
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Callable, Iterator

import torch
from torch import nn
from tqdm import tqdm  # text bars: notebook widgets would be saved into the rendered book

from .gating import GATE_MODES, Gating, attach_gates, detach_gates
from .losses import NORMS, PENALTIES, identity_penalty, kd_loss, l1_scales, relative_gap
from .devices import input_device, on_cuda
from .removal import remove_layers


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class TRSPConfig:
    """One TRSP run.  Defaults are the measured CPU default for small pre-norm models (see the book)."""

    # what to remove
    ratio: float = 0.25              # fraction of decoder layers to remove: n = round(ratio * L)
    n_remove: int | None = None      # overrides ratio when set
    protect_first: int = 0           # never select the first k layers
    protect_last: int = 1            # never select the last k layers (the last layer's output scale is invisible to a pre-norm LM head)
    # calibration data
    calib: str = "wiki"              # built-in calibration text ("wiki", "news") or a text file
    n_samples: int = 64              # calibration sequences
    seq_len: int = 256               # tokens per sequence
    batch_size: int = 1              # sequences per micro-batch (1 x 4 keeps SmolLM2 under 4 GB on CPU)
    grad_accum: int = 4              # micro-batches per optimizer step
    seed: int = 0
    # gates
    gate: str = "branch"             # "output" (paper: s * (h + F(h))) or "branch" (h + s * F(h))
    # stage 1
    lambda1: float = 0.05            # paper: 5e-3 (LLaMA-2-7B)
    steps_per_round: int = 4         # optimizer steps between two selections
    one_shot: bool = False           # ablation "w/o W": train n*steps_per_round steps, then select all n at once
    stage1_train: str = "gates"      # "gates": only the scales train; "all": scales and weights (released code)
    gate_lr: float = 1e-2            # learning rate of the scales (constant)
    gate_optimizer: str = "adam"     # "adam" or "sgd" for the scales
    lr: float = 2e-5                 # learning rate of the weights (paper: 2e-5, AdamW, 3% warm-up, linear decay)
    warmup: float = 0.03
    weight_decay: float = 0.0
    # stage 2
    lambda2: float = 1e-3            # paper: 1e-3
    norm: str = "l2"                 # "l2" (paper default) or "l1": per-token norm of X_out - X_in, mean over tokens
    stage2_steps: int = 16           # optimizer steps in stage 2 (in total, also for "sequential")
    stage2_mode: str = "joint"       # "joint": all of P at once (paper); "sequential": one layer at a time (released code)
    stage2_penalty: str = "gated"    # branch gate: "gated" penalises s*F(h), "ungated" F(h); output gate: always X_out - X_in before s
    stage2_fade: bool = True         # branch gate only: anneal the selected layers' s linearly to 0 in stage 2
    fade_fraction: float = 0.5       # ... over this fraction of the stage-2 steps; the rest trains with them at 0
    lambda2_warmup: float = 0.0      # fraction of stage 2 over which lambda2 ramps up from 0
    stage2_train: str = "all"        # "all" weights, or "kept": the selected layers' weights stay frozen
    stage2_loss: str = "lm"          # "lm" (paper) or "kd": KL(dense || pruned) in place of the LM loss (healing too)
    kd_temperature: float = 1.0      # temperature of the "kd" loss (and of +kd healing rows)
    # the end
    fold_scales: bool = True         # fold kept layers' scales into their weights (exact), or drop them
    # machine
    device: str = "cpu"              # "cuda", "cuda:1", or "auto": spread over every visible GPU (accelerate device_map)
    autocast: str = "auto"           # "auto": bf16 autocast on CUDA, none on CPU; "bf16"; "none"

    def validate(self, n_layers: int) -> int:
        """Check the configuration against a model with `n_layers`; return n to remove."""
        choices = {"gate": GATE_MODES, "norm": NORMS, "stage1_train": ("gates", "all"),
                   "gate_optimizer": ("adam", "sgd"), "stage2_mode": ("joint", "sequential"),
                   "stage2_penalty": PENALTIES, "stage2_train": ("all", "kept"), "stage2_loss": ("lm", "kd"),
                   "autocast": ("auto", "bf16", "none")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.n_remove is None:
            if not 0.0 < self.ratio < 1.0:
                raise ValueError(f"ratio must be in (0, 1), got {self.ratio}")
            n = layers_to_remove(self.ratio, n_layers)
            if n < 1:
                raise ValueError(f"ratio {self.ratio} of {n_layers} layers removes nothing; use a larger ratio")
        else:
            n = self.n_remove
        pool = n_layers - self.protect_first - self.protect_last
        if self.protect_first < 0 or self.protect_last < 0:
            raise ValueError("protect_first and protect_last must be >= 0")
        if not 1 <= n < n_layers:
            raise ValueError(f"cannot remove {n} of {n_layers} layers: need 1 <= n < {n_layers}")
        if n > pool:
            raise ValueError(f"cannot remove {n} layers: only {pool} candidates after protecting the first "
                             f"{self.protect_first} and last {self.protect_last}; lower protect_first/protect_last or the ratio")
        for name in ("n_samples", "seq_len", "batch_size", "grad_accum", "steps_per_round"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.stage2_steps < 0:
            raise ValueError("stage2_steps must be >= 0")
        if not 0.0 < self.fade_fraction <= 1.0:
            raise ValueError(f"fade_fraction must be in (0, 1], got {self.fade_fraction}")
        if self.stage2_fade and self.gate != "branch":
            raise ValueError("stage2_fade needs gate='branch' (fading an output gate to 0 zeroes the residual stream)")
        return n

    @classmethod
    def from_dict(cls, d: dict) -> "TRSPConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown TRSP parameter(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)


def layers_to_remove(ratio: float, n_layers: int) -> int:
    """round(ratio * L) with halves rounded up (Python's round() would send 0.5 to even)."""
    return math.floor(ratio * n_layers + 0.5)


#: Fields added to `TRSPConfig` after results were committed: a cache key leaves one out while it holds
#: its default, so adding a field with a default never changes a committed key (see `config_key`).
LATER_FIELDS: tuple[str, ...] = ("stage2_loss", "kd_temperature")


def config_key(cfg: TRSPConfig) -> dict:
    """The configuration as a result's key records it: every field, except late additions left at their default."""
    defaults = {f.name: f.default for f in fields(cfg)}
    return {k: v for k, v in asdict(cfg).items() if not (k in LATER_FIELDS and v == defaults[k])}


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


def step_budget(cfg: TRSPConfig, n: int) -> int:
    """Optimizer steps of a TRSP run removing n layers (stage 1 + stage 2): the equal-budget fine-tune's."""
    return n * cfg.steps_per_round + cfg.stage2_steps


def candidates(n_layers: int, cfg: TRSPConfig) -> list[int]:
    return list(range(cfg.protect_first, n_layers - cfg.protect_last))


def batch_stream(calib: torch.Tensor, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    """Endless micro-batches: a seeded permutation of the calibration rows, reshuffled each pass."""
    g = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(calib.shape[0], generator=g)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            yield calib[order[start:start + batch_size]]
        if len(order) < batch_size:
            raise ValueError(f"batch_size {batch_size} exceeds the {len(order)} calibration samples")


def _autocast(cfg: TRSPConfig):
    cuda = on_cuda(cfg.device)
    if cfg.autocast == "bf16" or (cfg.autocast == "auto" and cuda):
        return torch.autocast("cuda" if cuda else "cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _optimizer(model: nn.Module, gating: Gating, cfg: TRSPConfig, train_weights: Callable[[str], bool], steps: int):
    """AdamW on the weights that train (warm-up then linear decay), and the gates at a constant lr."""
    weights = []
    for name, p in model.named_parameters():
        if p is gating.scales:
            continue
        p.requires_grad_(train_weights(name))
        if p.requires_grad:
            weights.append(p)
    gate_opt = (torch.optim.SGD([gating.scales], lr=cfg.gate_lr) if cfg.gate_optimizer == "sgd"
                else torch.optim.AdamW([gating.scales], lr=cfg.gate_lr, weight_decay=0.0))
    # foreach=False: the fused multi-tensor update allocates a temporary copy of all the weights,
    # which on a 2-core laptop is the difference between fitting in 4 GB and not.
    weight_opt = (torch.optim.AdamW(weights, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=False)
                  if weights else None)
    warm = max(1, math.ceil(cfg.warmup * steps))

    def schedule(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (steps - step) / max(1, steps - warm))

    sched = torch.optim.lr_scheduler.LambdaLR(weight_opt, schedule) if weight_opt else None
    return gate_opt, weight_opt, sched


def _layer_name_index(name: str) -> int | None:
    """Index of the decoder layer a parameter belongs to (wrapped layers: '...layers.<i>.layer...')."""
    parts = name.split(".")
    for a, b in zip(parts, parts[1:]):
        if a in ("layers", "h", "layer") and b.isdigit():
            return int(b)
    return None


def lm_objective(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The paper's task loss: next-token cross-entropy on the calibration batch."""
    return model(input_ids=x, labels=x).loss


def kd_objective(teacher: nn.Module, temperature: float) -> Callable[[nn.Module, torch.Tensor], torch.Tensor]:
    """Distillation from `teacher` (the dense model, frozen) on the same calibration batch."""
    teacher.eval()

    def objective(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        logits = model(input_ids=x).logits
        with torch.no_grad():
            target = teacher(input_ids=x.to(input_device(teacher))).logits
        return kd_loss(logits, target.to(logits.device), temperature)
    return objective


class _Trainer:
    """Runs optimizer steps and records the trajectory; shared by both stages."""

    def __init__(self, model: nn.Module, gating: Gating, calib: torch.Tensor, cfg: TRSPConfig):
        self.model, self.gating, self.cfg = model, gating, cfg
        self.batches = batch_stream(calib, cfg.batch_size, cfg.seed)
        self.trajectory: list[dict] = []
        self.step = 0
        self.objective: Callable[[nn.Module, torch.Tensor], torch.Tensor] = lm_objective

    def run(self, stage: int, steps: int, gate_opt, weight_opt, sched, regularizer: Callable[[int], torch.Tensor],
            before_step: Callable[[int], None] | None = None, round_: int | None = None, bar: tqdm | None = None,
            frozen_gates: list[int] | None = None) -> None:
        model, cfg = self.model, self.cfg
        device = input_device(model)
        for k in range(steps):
            if before_step is not None:
                before_step(k)
            gate_opt.zero_grad(set_to_none=True)
            if weight_opt:
                weight_opt.zero_grad(set_to_none=True)
            lm_sum = reg_sum = 0.0
            for _ in range(cfg.grad_accum):
                x = next(self.batches).to(device)
                with _autocast(cfg):
                    lm = self.objective(model, x)
                reg = regularizer(k)
                total = lm.float() + reg.to(lm.device)  # the loss sits on the last GPU of a device_map
                if not torch.isfinite(total):
                    raise TrainingDiverged(
                        f"stage {stage} step {self.step}: loss is {total.item()} (LM {lm.item():.4g}, reg {float(reg.detach()):.4g}); "
                        "lower --lr / --gate-lr, --lambda1 / --lambda2, or run in float32")
                (total / cfg.grad_accum).backward()
                self.gating.forget()
                lm_sum += lm.item() / cfg.grad_accum
                reg_sum += float(reg.detach()) / cfg.grad_accum
            if frozen_gates and self.gating.scales.grad is not None:
                self.gating.scales.grad[frozen_gates] = 0.0  # set by a schedule, not learned (Adam then leaves them)
            gate_opt.step()
            if weight_opt:
                weight_opt.step()
                sched.step()
            self.trajectory.append({
                "stage": stage, "round": round_, "step": self.step, "lm": lm_sum, "reg": reg_sum,
                "loss": lm_sum + reg_sum, "scales": self.gating.scales.detach().float().cpu().tolist(),
            })
            self.step += 1
            if bar is not None:
                bar.set_postfix(lm=f"{lm_sum:.3f}", reg=f"{reg_sum:.3g}")
                bar.update(1)


def select_smallest(scales: torch.Tensor, pool: list[int], k: int) -> list[int]:
    """The k candidates with the smallest raw scale (as in the released code), ties to the lower index."""
    return sorted(pool, key=lambda i: (float(scales[i]), i))[:k]


def stage1(trainer: _Trainer, n: int, pool: list[int]) -> list[int]:
    """Learn the scales under LM + lambda1 * sum|s_alive|; each round the smallest candidate joins P."""
    cfg, gating = trainer.cfg, trainer.gating
    rounds = 1 if cfg.one_shot else n
    steps = cfg.steps_per_round * (n if cfg.one_shot else 1)
    selected: list[int] = []
    train_all = cfg.stage1_train == "all"
    with tqdm(total=rounds * steps, desc=f"stage 1: select {n} layers", unit="step") as bar:
        for r in range(rounds):
            opts = _optimizer(trainer.model, gating, cfg, lambda name: train_all, steps)
            alive = [i for i in range(gating.n_layers) if i not in gating.skipped]

            def reg(_k: int) -> torch.Tensor:
                return cfg.lambda1 * l1_scales(gating.scales, alive)

            trainer.run(1, steps, *opts, regularizer=reg, round_=r, bar=bar)
            s = gating.scales.detach().float().cpu()
            take = select_smallest(s, [i for i in pool if i not in selected], n if cfg.one_shot else 1)
            selected.extend(take)
            gating.skip(take)
            bar.write(f"  round {r + 1}: removed layer(s) {take}  (s = {', '.join(f'{s[i]:.3f}' for i in take)})")
    return selected


def stage2(trainer: _Trainer, selected: list[int]) -> None:
    """Train LM + lambda2 * sum_P ||X_out - X_in|| with P active, so P's layers become identities.

    The switches of the ablations are the helpers below: which groups train (`_stage2_groups`:
    all of P at once, or one layer at a time), which weights (`_trains`), the lambda2 warm-up
    (`_lambda2`), the fade of P's gates to 0 (`_fade`), and the penalty (`losses.identity_penalty`)."""
    cfg, gating = trainer.cfg, trainer.gating
    if cfg.stage2_steps == 0 or not selected:
        return
    start = {i: gating.scales[i].item() for i in selected}
    trains = _trains(cfg, selected)
    with tqdm(total=cfg.stage2_steps, desc=f"stage 2: {cfg.stage2_mode} over {len(selected)} layers", unit="step") as bar:
        for group, steps in _stage2_groups(cfg, selected):

            def penalty(k: int, group=group, steps=steps) -> torch.Tensor:
                return _lambda2(cfg, k, steps) * identity_penalty(gating, group, cfg.norm, cfg.stage2_penalty)

            with gating.running(group), gating.capturing(group):
                trainer.run(2, steps, *_optimizer(trainer.model, gating, cfg, trains, steps), regularizer=penalty,
                            before_step=_fade(cfg, gating, group, start, steps), bar=bar,
                            frozen_gates=group if cfg.stage2_fade else None)


def _stage2_groups(cfg: TRSPConfig, selected: list[int]) -> list[tuple[list[int], int]]:
    """(layers, steps) per stage-2 phase: P jointly, or ("sequential") each layer with its share of the steps."""
    groups = [selected] if cfg.stage2_mode == "joint" else [[i] for i in selected]
    steps = [cfg.stage2_steps // len(groups) + (1 if g < cfg.stage2_steps % len(groups) else 0) for g in range(len(groups))]
    return [(g, s) for g, s in zip(groups, steps) if s > 0]


def _trains(cfg: TRSPConfig, selected: list[int]) -> Callable[[str], bool]:
    """Which weights train in stage 2: every one, or ("kept") all but the selected layers'."""
    frozen = set(selected) if cfg.stage2_train == "kept" else set()

    def trains(name: str) -> bool:
        idx = _layer_name_index(name)
        return idx is None or idx not in frozen
    return trains


def _lambda2(cfg: TRSPConfig, k: int, steps: int) -> float:
    """lambda2 at step k, ramped up linearly over the first `lambda2_warmup` fraction of the phase."""
    warm = cfg.lambda2_warmup * steps
    return cfg.lambda2 * (min(1.0, (k + 1) / warm) if warm > 0 else 1.0)


def _fade(cfg: TRSPConfig, gating: Gating, group: list[int], start: dict[int, float], steps: int) -> Callable[[int], None]:
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
def measure_identity_gap(model: nn.Module, gating: Gating, layers: list[int], batch: torch.Tensor, cfg: TRSPConfig) -> dict[int, float]:
    """||X_out - X_in|| / ||X_in|| of each layer in `layers`, on one calibration batch, P active."""
    with gating.running(layers), gating.capturing(layers):
        with _autocast(cfg):
            model(input_ids=batch.to(input_device(model)))
        return {i: relative_gap(gating.diffs[i], gating.inputs[i]) for i in layers}


def prune(model: nn.Module, calib: torch.Tensor, cfg: TRSPConfig | None = None,
          teacher: nn.Module | None = None) -> TRSPResult:
    """Run TRSP on `model` with calibration token ids `calib` [N, seq_len]; the model is pruned in place.

    `teacher`: the dense model for `stage2_loss="kd"` (default: a frozen copy of `model` taken here)."""
    import copy

    from .adapters import get_layers

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
    gating = attach_gates(model, cfg.gate)
    trainer = _Trainer(model, gating, calib, cfg)
    try:
        selected = stage1(trainer, n, candidates(n_layers, cfg))
        t1 = time.perf_counter()
        if cfg.stage2_loss == "kd":
            trainer.objective = kd_objective(teacher, cfg.kd_temperature)
        stage2(trainer, selected)
        t2 = time.perf_counter()
        model.eval()
        gap = measure_identity_gap(model, gating, selected, calib[: cfg.batch_size], cfg)
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
        timings={"stage1_s": t1 - t0, "stage2_s": t2 - t1, "total_s": t3 - t0}, config=asdict(cfg), model=model)


def finetune(model: nn.Module, calib: torch.Tensor, steps: int, cfg: TRSPConfig | None = None,
             teacher: nn.Module | None = None) -> list[dict]:
    """Plain LM fine-tuning of all weights with TRSP's optimizer and batches: the equal-budget control.

    It runs through the same trainer as TRSP (gates attached at 1 and frozen, no regularizer), so
    "baseline + fine-tune" differs from TRSP only in what is regularized and selected. With a
    `teacher` (the dense model) it distils instead: KL(teacher || model) at `cfg.kd_temperature`
    on the same batches and steps (the "+kd" rows).
    """
    cfg = cfg or TRSPConfig()
    if steps < 1:
        return []
    torch.manual_seed(cfg.seed)
    was_training = model.training
    model.train()
    gating = attach_gates(model, "branch")
    gating.scales.requires_grad_(False)
    trainer = _Trainer(model, gating, calib, cfg)
    if teacher is not None:
        trainer.objective = kd_objective(teacher, cfg.kd_temperature)
    try:
        gate_opt, weight_opt, sched = _optimizer(model, gating, cfg, lambda name: True, steps)
        zero = torch.zeros(())
        with tqdm(total=steps, desc="distil" if teacher is not None else "fine-tune", unit="step") as bar:
            trainer.run(0, steps, gate_opt, weight_opt, sched, regularizer=lambda k: zero, bar=bar)
    finally:
        gating.scales.requires_grad_(True)
        detach_gates(model, gating, fold=False)
        model.train(was_training)
    return trainer.trajectory

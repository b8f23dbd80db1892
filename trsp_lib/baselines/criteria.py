"""Layer-selection baselines that TRSP is compared with.

Each criterion has one signature, `(model, calib, n) -> layers to remove, in order`, and shares
the calibration data, the hooks (`gating`) and the removal code with TRSP. LaCo alone also edits
weights (it merges layers), so callers give every criterion its own copy of the dense model.
They become pipelines (rows of the study) by one entry each in `pipelines.SELECTIONS`.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
from torch import nn

from ..surgery.adapters import get_layers
from ..surgery.gating import attach_gates, detach_gates
from ..surgery.devices import input_device
from ..log import progress, say
from .shared_prefix import candidate_losses


@torch.no_grad()
def captured_io(model: nn.Module, calib: torch.Tensor,
                batch_size: int = 4) -> Iterator[list[tuple[torch.Tensor, torch.Tensor]]]:
    """For each calibration batch, (X_in, X_out) of every layer, recorded by the shared gating hooks."""
    device = input_device(model)
    was_training = model.training
    model.eval()
    gating = attach_gates(model, "output")
    try:
        with gating.capturing(range(gating.n_layers)):
            for start in range(0, calib.shape[0], batch_size):
                model(input_ids=calib[start:start + batch_size].to(device), use_cache=False)
                yield [(gating.inputs[i], gating.inputs[i] + gating.diffs[i]) for i in range(gating.n_layers)]
                gating.forget()
    finally:
        detach_gates(model, gating, fold=False)
        model.train(was_training)


def layer_io(model: nn.Module, calib: torch.Tensor, batch_size: int = 4, reduce=None) -> list[torch.Tensor]:
    """Per-layer statistic of (X_in, X_out), summed over the calibration batches (default: token cosines)."""
    reduce = reduce or (lambda x, y: nn.functional.cosine_similarity(x.float(), y.float(), dim=-1).sum())
    totals: list[torch.Tensor] = []
    for io in captured_io(model, calib, batch_size):
        values = [reduce(x, y).cpu() for x, y in io]
        totals = values if not totals else [t + v for t, v in zip(totals, values)]
    return totals


def block_influence(model: nn.Module, calib: torch.Tensor, batch_size: int = 4) -> list[float]:
    """ShortGPT's Block Influence: 1 - mean cosine(X_in, X_out) over calibration tokens."""
    sums = layer_io(model, calib, batch_size)
    tokens = calib.numel()
    return [1.0 - float(s) / tokens for s in sums]


def shortgpt(model: nn.Module, calib: torch.Tensor, n: int) -> list[int]:
    """The n layers with the lowest Block Influence (one shot), lowest first."""
    _check_n(model, n)
    bi = block_influence(model, calib)
    return sorted(range(len(bi)), key=lambda i: (bi[i], i))[:n]


@torch.no_grad()
def calib_loss(model: nn.Module, calib: torch.Tensor, skip: set[int] | frozenset = frozenset(),
               batch_size: int = 4) -> float:
    """Mean next-token loss on the calibration ids with the layers in `skip` skipped (identity)."""
    device = input_device(model)
    was_training = model.training
    model.eval()
    gating = attach_gates(model, "output")
    total, count = 0.0, 0
    try:
        with gating.skipping(skip):
            for start in range(0, calib.shape[0], batch_size):
                x = calib[start:start + batch_size].to(device)
                total += model(input_ids=x, labels=x, use_cache=False).loss.item() * x.shape[0]
                count += x.shape[0]
    finally:
        detach_gates(model, gating, fold=False)
        model.train(was_training)
    return total / count


def _check_n(model: nn.Module, n: int) -> int:
    n_layers = len(get_layers(model))
    if not 1 <= n < n_layers:
        raise ValueError(f"cannot remove {n} of {n_layers} layers: need 1 <= n < {n_layers}")
    return n_layers


#: (model, calib, removed, candidates, bar) -> {candidate i: calibration loss with i and the removed layers skipped};
#: the scorer advances the progress `bar` by the calibration rows each candidate has been scored on.
Scorer = Callable[..., dict[int, float]]


def sleb_search(model: nn.Module, calib: torch.Tensor, n: int,
                score: Scorer = candidate_losses) -> tuple[list[int], list[dict[int, float]]]:
    """SLEB's greedy steps: (layers removed in order, every step's candidate losses) for checks and plots.

    Shows one bar over every candidate of every step (SmolLM2-135M, 8 of 30 layers: minutes on a CPU)."""
    n_layers = _check_n(model, n)
    removed: list[int] = []
    steps: list[dict[int, float]] = []
    rows = calib.shape[0]  # the bar counts rows scored (exact integers), shown as candidates
    with progress(desc=f"SLEB: remove {n} of {n_layers} layers", unit="candidate", unit_scale=1 / rows,
                  total=rows * sum(n_layers - k for k in range(n))) as bar:
        for _ in range(n):
            losses = score(model, calib, removed, [i for i in range(n_layers) if i not in removed], bar=bar)
            removed.append(min(losses, key=lambda i: (losses[i], i)))
            steps.append(losses)
            bar.set_postfix(removed=removed[-1])
    return removed, steps


def sleb(model: nn.Module, calib: torch.Tensor, n: int) -> list[int]:
    """SLEB: greedily remove the layer whose removal raises the calibration loss least, re-scored each step."""
    return sleb_search(model, calib, n)[0]


def full_forward_losses(model: nn.Module, calib: torch.Tensor, removed: list[int], candidates: list[int],
                        bar=None) -> dict[int, float]:
    """The straightforward scorer (one whole forward pass per candidate): the reference `candidate_losses` must
    match."""
    out = {}
    for i in candidates:
        out[i] = calib_loss(model, calib, set(removed) | {i})
        if bar is not None:
            bar.update(calib.shape[0])
    return out


def sleb_reference(model: nn.Module, calib: torch.Tensor, n: int) -> list[int]:
    """SLEB as first written (no reuse between candidates), kept to test and time the fast search against."""
    return sleb_search(model, calib, n, full_forward_losses)[0]


def ppl_scores(model: nn.Module, calib: torch.Tensor) -> list[float]:
    """Calibration loss with each layer alone removed (Shortened LLaMA's PPL criterion, in log space)."""
    return [calib_loss(model, calib, {i}) for i in range(len(get_layers(model)))]


def ppl(model: nn.Module, calib: torch.Tensor, n: int) -> list[int]:
    """Shortened LLaMA's PPL criterion: rank layers by the calibration loss with that layer alone removed."""
    n_layers = _check_n(model, n)
    losses = ppl_scores(model, calib)
    return sorted(range(n_layers), key=lambda i: (losses[i], i))[:n]


def taylor_scores(model: nn.Module, calib: torch.Tensor, batch_size: int = 4) -> list[float]:
    """Shortened LLaMA's Taylor+: per layer, the sum over its weights of |w * dL/dw| on calibration data."""
    device = input_device(model)
    layers = get_layers(model)
    was_training = model.training
    model.eval()
    model.zero_grad(set_to_none=True)
    for start in range(0, calib.shape[0], batch_size):
        x = calib[start:start + batch_size].to(device)
        (model(input_ids=x, labels=x, use_cache=False).loss * x.shape[0] / calib.shape[0]).backward()
    scores = [sum((p.detach() * p.grad).abs().sum().item() for p in layer.parameters() if p.grad is not None)
              for layer in layers]
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return scores


def taylor(model: nn.Module, calib: torch.Tensor, n: int) -> list[int]:
    n_layers = _check_n(model, n)
    scores = taylor_scores(model, calib)
    return sorted(range(n_layers), key=lambda i: (scores[i], i))[:n]


def angular_distances(model: nn.Module, calib: torch.Tensor, n: int) -> list[float]:
    """Mean angular distance / pi between the last-token states before block [s, s+n) and after it, per start s."""
    n_layers = len(get_layers(model))
    batches = []  # per batch, [L + 1, B, H]: the input of every layer, then the last layer's output
    for io in captured_io(model, calib):
        batches.append(torch.stack([x[:, -1] for x, _ in io] + [io[-1][1][:, -1]]).float().cpu())
    states = torch.cat(batches, dim=1)
    dist = [torch.arccos(nn.functional.cosine_similarity(states[s], states[s + n], dim=-1).clamp(-1, 1)).mean().item()
            / math.pi for s in range(n_layers - n + 1)]
    return dist


def angular(model: nn.Module, calib: torch.Tensor, n: int) -> list[int]:
    """Gromov et al.: the contiguous block of n layers whose input and output (last token) are closest in angle."""
    _check_n(model, n)
    dist = angular_distances(model, calib, n)
    start = min(range(len(dist)), key=lambda s: (dist[s], s))
    return list(range(start, start + n))


def layer_scores(model: nn.Module, calib: torch.Tensor) -> dict[str, list[float]]:
    """Every one-shot criterion's per-layer score (low = removed first), for side-by-side plots."""
    return {"shortgpt": block_influence(model, calib), "angular": angular_distances(model, calib, 1),
            "ppl": ppl_scores(model, calib), "taylor": taylor_scores(model, calib)}


def random_layers(model: nn.Module, calib: torch.Tensor | None, n: int, seed: int = 0) -> list[int]:
    """A seeded random choice: the floor every criterion should clear."""
    n_layers = _check_n(model, n)
    return torch.randperm(n_layers, generator=torch.Generator().manual_seed(seed))[:n].tolist()


def reverse(model: nn.Module, calib: torch.Tensor | None, n: int) -> list[int]:
    """The n layers before the final one, last first ("Reassessing Layer Pruning")."""
    n_layers = _check_n(model, n)
    return list(range(n_layers - 2, n_layers - 2 - n, -1))


@torch.no_grad()
def magnitude(model: nn.Module, calib: torch.Tensor | None, n: int) -> list[int]:
    """The n layers with the smallest mean |weight| over their matrices: a calibration-free floor.

    The README's worked example of adding a criterion (one entry in `pipelines.SELECTIONS`, one test)."""
    n_layers = _check_n(model, n)
    score = [torch.cat([p.abs().flatten() for p in layer.parameters() if p.ndim >= 2]).float().mean().item()
             for layer in get_layers(model)]
    return sorted(range(n_layers), key=lambda i: (score[i], i))[:n]


@torch.no_grad()
def last_hidden(model: nn.Module, calib: torch.Tensor, skip: set[int] | frozenset = frozenset(),
                batch_size: int = 4) -> torch.Tensor:
    """The final hidden states [N, T, H] (after the last norm) with the layers in `skip` skipped."""
    device = input_device(model)
    was_training = model.training
    model.eval()
    gating = attach_gates(model, "output")
    try:
        with gating.skipping(skip):
            out = [model(input_ids=calib[s:s + batch_size].to(device), output_hidden_states=True,
                         use_cache=False).hidden_states[-1].float().cpu() for s in range(0, calib.shape[0], batch_size)]
    finally:
        detach_gates(model, gating, fold=False)
        model.train(was_training)
    return torch.cat(out)


def laco(model: nn.Module, calib: torch.Tensor, n: int, merge: int = 4, interval: int = 2,
         threshold: float = 0.65, low: int = 1, samples: int = 8) -> list[int]:
    """LaCo (Yang et al. 2024): collapse rear layers into an earlier one; returns the merged-away layers.

    Unlike the other criteria this one EDITS WEIGHTS: layer l becomes theta_l + sum_k (theta_{l+k} - theta_l)
    over the next `merge - 1` kept layers (RDSC merge), and the caller deletes the returned layers.
    Walking down from the top, a merge is kept when the mean cosine similarity of the final hidden
    states (first `samples` calibration rows) to the dense model's stays above `threshold`; after a
    kept merge the walk jumps `interval` layers. If a walk ends short of n, it restarts from the top
    with the threshold lowered by 0.05 (printed), so the result always has exactly n fewer layers.
    """
    n_layers = _check_n(model, n)
    calib = calib[:samples]
    layers = get_layers(model)
    reference = last_hidden(model, calib)
    removed: list[int] = []
    accepted: list[tuple] = []  # the merges kept so far: with them, they fix the weights a trial sees
    seen: dict[tuple, float] = {}  # a trial's similarity, so a walk at a lower threshold re-scores nothing
    while True:
        l = n_layers - merge
        while l >= low and len(removed) < n:
            kept_after = [i for i in range(l + 1, n_layers) if i not in removed][: min(merge - 1, n - len(removed))]
            if l in removed or not kept_after:
                l -= 1
                continue
            trial = (tuple(accepted), l, tuple(kept_after))
            if trial in seen and seen[trial] <= threshold:
                l -= 1
                continue
            target = dict(layers[l].named_parameters())
            saved = {k: p.detach().clone() for k, p in target.items()}
            with torch.no_grad():
                for j in kept_after:
                    for k, p in layers[j].named_parameters():
                        target[k].add_(p.detach().to(target[k].dtype) - saved[k])
            if trial not in seen:
                merged = last_hidden(model, calib, set(removed) | set(kept_after))
                seen[trial] = nn.functional.cosine_similarity(merged, reference, dim=-1).mean().item()
            if seen[trial] > threshold:
                removed.extend(kept_after)
                accepted.append(trial[1:])
                l -= interval
            else:
                with torch.no_grad():
                    for k, p in target.items():
                        p.copy_(saved[k])
                l -= 1
        if len(removed) >= n:
            return removed
        threshold -= 0.05
        say(f"laco: {len(removed)} of {n} layers merged after a full walk; lowering the threshold to {threshold:.2f}")

"""Closed-form compensation of removed layers (`lin`, after ReplaceMe, arXiv 2505.02819).

For each contiguous run of removed layers [a, b], the last kept layer before it (a - 1) learns a
d x d linear map T on its MLP branch so that its output reproduces the hidden state after b:
with Y that layer's output, M its MLP branch output and L the hidden state after layer b,

    Y - M + M T  ~  L,        T = (M^T M + alpha I)^-1 M^T (L - Y + M)         (ridge alpha)

and T is folded into the branch's last weight, so the checkpoint stays a stock Hugging Face one.
Where the branch ends in a norm (Gemma-2/3: ``post_feedforward_layernorm``), only a diagonal T
folds exactly (into the norm's scale), so there the map is fitted per channel. A run that starts
at layer 0 has no kept layer before it and is left uncompensated (recorded in the result).

`sequential=True` fits the runs in order on the model being pruned (earlier runs already removed
and compensated) against the dense model's hidden states, so later maps absorb earlier errors.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from ..surgery.adapters import get_adapter, get_layers
from ..surgery.devices import input_device
from ..surgery.removal import remove_layers


def contiguous_runs(removed: list[int]) -> list[tuple[int, int]]:
    """[(first, last), ...] of the removed indices, in order: [3, 4, 7] -> [(3, 4), (7, 7)]."""
    runs: list[tuple[int, int]] = []
    for i in sorted(set(removed)):
        if runs and i == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    return runs


def branch_module(model: nn.Module, layer: int) -> nn.Module:
    """The module whose output is the MLP branch added to the residual stream (last of the adapter's)."""
    adapter = get_adapter(model)
    module = get_layers(model)[layer]
    for part in adapter.branch_outputs[-1].split("."):
        module = getattr(module, part)
    return module


def is_diagonal_only(module: nn.Module) -> bool:
    """A norm ends the branch (Gemma): only a per-channel map folds into it exactly."""
    return not isinstance(module, nn.Linear) and type(module).__name__ != "Conv1D"


def solve(mtm: torch.Tensor, mtr: torch.Tensor, alpha: float, diagonal: bool) -> torch.Tensor:
    """Ridge solution from accumulated statistics; `alpha` is relative to the mean of diag(M^T M).

    Full: T = (MtM + a I)^-1 MtR (d x d). Diagonal: t_j = MtR_jj / (MtM_jj + a), returned as diag(t)."""
    ridge = alpha * float(mtm.diagonal().mean())
    if diagonal:
        return torch.diag(mtr.diagonal() / (mtm.diagonal() + ridge).clamp_min(1e-12))
    eye = torch.eye(mtm.shape[0], dtype=mtm.dtype)
    return torch.linalg.solve(mtm + ridge * eye, mtr)


class _Enough(Exception):
    """Raised by the last hook of a pass: the layers above it (and the LM head) need not run."""


@contextmanager
def _capture(modules: dict[str, nn.Module], stop_after: str) -> Iterator[dict[str, torch.Tensor]]:
    """Forward hooks that keep each module's latest output under its name; the pass stops after `stop_after`."""
    out: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(_m, _a, o):
            out[name] = o[0] if isinstance(o, tuple) else o
            if name == stop_after:
                raise _Enough
        return hook

    hooks = [m.register_forward_hook(keep(k)) for k, m in modules.items()]
    try:
        yield out
    finally:
        for h in hooks:
            h.remove()


def _run(model: nn.Module, x: torch.Tensor) -> None:
    try:
        model(input_ids=x)
    except _Enough:
        pass


@torch.no_grad()
def fit_map(student: nn.Module, kept: int, teacher: nn.Module, target: int, calib: torch.Tensor,
            alpha: float = 0.0, batch_size: int = 4) -> torch.Tensor:
    """T for one run: `kept` is the layer (student numbering) before the cut, `target` the teacher
    layer whose output it should reproduce. Statistics accumulate in float64, one batch at a time."""
    branch = branch_module(student, kept)
    diagonal = is_diagonal_only(branch)
    mods_s = {"y": get_layers(student)[kept], "m": branch}
    mods_t = {"l": get_layers(teacher)[target]}
    mtm = mtr = None
    device = input_device(student)
    same = teacher is student
    with _capture({**mods_s, **mods_t} if same else mods_s, "l" if same else "y") as s, \
            _capture({} if same else mods_t, "l") as t:
        for x in calib.split(batch_size):
            x = x.to(device)
            _run(student, x)
            if not same:
                _run(teacher, x)
            else:
                t = s
            m = s["m"].reshape(-1, s["m"].shape[-1]).double().cpu()
            r = (t["l"] - s["y"] + s["m"]).reshape(-1, m.shape[-1]).double().cpu()
            mtm = m.T @ m if mtm is None else mtm + m.T @ m
            mtr = m.T @ r if mtr is None else mtr + m.T @ r
    return solve(mtm, mtr, alpha, diagonal)


@torch.no_grad()
def fold_map(model: nn.Module, layer: int, T: torch.Tensor) -> None:
    """Make the MLP branch of `layer` output (branch output) @ T, in its weights (exact).

    Linear (out x in): W' = T^T W, b' = b T. GPT-2 Conv1D (in x out): W' = W T. A norm ending the
    branch (diagonal T only): the norm's per-channel scale is multiplied by diag(T)."""
    module = branch_module(model, layer)
    T = T.to(torch.float64)
    if isinstance(module, nn.Linear):
        w = module.weight
        w.copy_((T.T.to(w.device) @ w.double()).to(w.dtype))
        if module.bias is not None:
            module.bias.copy_((module.bias.double() @ T.to(w.device)).to(w.dtype))
    elif type(module).__name__ == "Conv1D":
        module.weight.copy_((module.weight.double() @ T.to(module.weight.device)).to(module.weight.dtype))
        if module.bias is not None:
            module.bias.copy_((module.bias.double() @ T.to(module.bias.device)).to(module.bias.dtype))
    else:
        _scale_norm(module, T.diagonal())


def _scale_norm(norm: nn.Module, t: torch.Tensor) -> None:
    """Multiply an RMSNorm's output by t per channel: Gemma's (1 + w) -> (1 + w) t, else w -> w t."""
    from ..surgery.adapters import ONE_PLUS_RMSNORMS

    w = norm.weight
    t = t.to(device=w.device)
    if type(norm).__name__ in ONE_PLUS_RMSNORMS:
        w.copy_(((1.0 + w.double()) * t - 1.0).to(w.dtype))
    else:
        w.copy_((w.double() * t).to(w.dtype))


def compensate(model: nn.Module, removed: list[int], calib: torch.Tensor, alpha: float = 0.0,
               sequential: bool = True, dense: nn.Module | None = None, batch_size: int = 4) -> dict:
    """Remove `removed` from `model` (still at full depth) with one folded map per contiguous run.

    `dense` is the teacher for sequential fitting (default: a copy of `model` taken here). Returns what a
    row records: the runs, the ones left uncompensated (a cut at layer 0), alpha and the mode."""
    import copy

    runs = contiguous_runs(removed)
    if not sequential:  # every map from the model's own (dense) states, then remove all at once
        maps = [(a - 1, fit_map(model, a - 1, model, b, calib, alpha, batch_size)) for a, b in runs if a > 0]
        for kept, T in maps:
            fold_map(model, kept, T)
        remove_layers(model, removed)
        return _info(model, runs, alpha, sequential)
    teacher = dense if dense is not None else copy.deepcopy(model)
    remove_layers(model, removed)
    return compensate_removed(model, removed, calib, teacher, alpha, batch_size)


def compensate_removed(model: nn.Module, removed: list[int], calib: torch.Tensor, dense: nn.Module,
                       alpha: float = 0.0, batch_size: int = 4) -> dict:
    """Sequential `lin` on a model whose layers `removed` (dense numbering) are already gone, e.g. TRSP's
    output: run by run, the kept layer before each cut learns to reproduce the dense hidden state after it."""
    runs = contiguous_runs(removed)
    done = 0
    for a, b in runs:  # layer a-1 of the dense model sits at a-1-done in the pruned one
        if a > 0:
            kept = a - 1 - done
            fold_map(model, kept, fit_map(model, kept, dense, b, calib, alpha, batch_size))
        done += b - a + 1
    return _info(model, runs, alpha, True)


def _info(model: nn.Module, runs: list[tuple[int, int]], alpha: float, sequential: bool) -> dict:
    return {"runs": [list(r) for r in runs], "uncompensated_runs": [list(r) for r in runs if r[0] == 0],
            "alpha": alpha, "sequential": sequential, "diagonal": is_diagonal_only(branch_module(model, 0))}

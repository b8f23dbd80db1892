"""Layer-selection baselines that TRSP is compared with.

Each criterion has one signature, `(model, calib, n) -> layers to remove, in order`, and shares
the calibration data, the hooks (`gating`) and the removal code with TRSP.
"""
from __future__ import annotations

import torch
from torch import nn

from .adapters import get_layers
from .gating import attach_gates, detach_gates


@torch.no_grad()
def layer_io(model: nn.Module, calib: torch.Tensor, batch_size: int = 4, reduce=None) -> list[torch.Tensor]:
    """Per-layer statistic of (X_in, X_out) over the calibration batches, by the shared hooks.

    `reduce(x_in, x_out) -> tensor[...]` is summed over batches (default: sum of token cosines).
    """
    reduce = reduce or (lambda x, y: nn.functional.cosine_similarity(x.float(), y.float(), dim=-1).sum())
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    gating = attach_gates(model, "output")
    n_layers = gating.n_layers
    gating.capture = set(range(n_layers))
    totals: list[torch.Tensor] = [torch.zeros(()) for _ in range(n_layers)]
    try:
        for start in range(0, calib.shape[0], batch_size):
            model(input_ids=calib[start:start + batch_size].to(device), use_cache=False)
            for i in range(n_layers):
                x_in = gating.inputs[i]
                totals[i] = totals[i] + reduce(x_in, x_in + gating.diffs[i]).cpu()
            gating.diffs.clear()
            gating.inputs.clear()
    finally:
        detach_gates(model, gating, fold=False)
        model.train(was_training)
    return totals


def block_influence(model: nn.Module, calib: torch.Tensor, batch_size: int = 4) -> list[float]:
    """ShortGPT's Block Influence: 1 - mean cosine(X_in, X_out) over calibration tokens."""
    sums = layer_io(model, calib, batch_size)
    tokens = calib.numel()
    return [1.0 - float(s) / tokens for s in sums]


def shortgpt(model: nn.Module, calib: torch.Tensor, n: int) -> list[int]:
    """The n layers with the lowest Block Influence (one shot), lowest first."""
    bi = block_influence(model, calib)
    return sorted(range(len(bi)), key=lambda i: (bi[i], i))[:n]


def reverse(model: nn.Module, calib: torch.Tensor | None, n: int) -> list[int]:
    """The n layers before the final one, last first ("Reassessing Layer Pruning")."""
    n_layers = len(get_layers(model))
    if not 1 <= n < n_layers:
        raise ValueError(f"cannot remove {n} of {n_layers} layers")
    return list(range(n_layers - 2, n_layers - 2 - n, -1))


CRITERIA = {"shortgpt": shortgpt, "reverse": reverse}

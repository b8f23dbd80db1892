"""SLEB's candidate losses with their shared prefix computed once: the same numbers, about half the work.

One SLEB step scores every kept layer i by the calibration loss with i also skipped. Skipping i
changes nothing before it, so the hidden state entering layer i is that of the current (already
pruned) model: one forward pass per batch records it for every kept layer, and candidate i then
restarts from it and runs only the kept layers after i, the final norm, the LM head and the loss.

The restart goes through the model's own forward (embeddings, masks, rotary and per-layer-type
position embeddings as the architecture builds them; the loss as `model(labels=...)` computes it):
every layer up to i is skipped by the shared gates (identity), and a pre-hook on the first decoder
layer swaps its input for the recorded state. So skipping stays exactly `criteria.calib_loss`'s, for
every architecture with an adapter, and the batches are summed in the same order: equal losses.

Each candidate still pays for the LM head and the loss (a fifth of SmolLM2-135M's forward), so a
step costs about 0.65 of the straightforward one: `tools/bench_sleb.py` measured 1.53x on
SmolLM2-135M's first step (16 x 256 tokens, 30 candidates, one thread), selections and losses equal.

Memory: the recorded states of one batch, kept layers x batch x seq x hidden in the model's dtype
(SmolLM2-135M, 4 x 256 tokens: 70 MB), on the layers' devices.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch
from torch import nn

from ..surgery.adapters import get_layers
from ..surgery.devices import input_device
from ..surgery.gating import Gating, attach_gates, detach_gates


def _replace_hidden(args: tuple, kwargs: dict, state: torch.Tensor) -> tuple[tuple, dict]:
    """A decoder layer's call with `state` as its hidden states (positional in transformers 5.x, or by name)."""
    if args:
        return (state, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": state}


def _hidden(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


@contextlib.contextmanager
def _entering_first_layer(layers: nn.ModuleList, state: torch.Tensor) -> Iterator[None]:
    """Inside the block, the first decoder layer receives `state` in place of the embeddings' output."""
    handle = layers[0].register_forward_pre_hook(lambda m, a, k: _replace_hidden(a, k, state), with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def _layer_inputs(model: nn.Module, gating: Gating, x: torch.Tensor) -> dict[int, torch.Tensor]:
    """The hidden state entering every layer not skipped by `gating`, for the batch `x`."""
    states: dict[int, torch.Tensor] = {}

    def record(i: int):
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            if i not in gating.skipped:
                states[i] = _hidden(args, kwargs)
        return hook

    handles = [layer.register_forward_pre_hook(record(i), with_kwargs=True)
               for i, layer in enumerate(get_layers(model))]
    try:
        model(input_ids=x, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return states


@torch.no_grad()
def candidate_losses(model: nn.Module, calib: torch.Tensor, removed: Iterable[int], candidates: Iterable[int],
                     batch_size: int = 4, bar=None) -> dict[int, float]:
    """{i: calib_loss(model, calib, removed | {i})} for every candidate i, reusing the states before i.

    Candidates must not be in `removed` (their entering state is what the pruned model records). A progress
    `bar` (tqdm) advances by the calibration rows each candidate is scored on, batch by batch.
    """
    removed, candidates = set(removed), list(candidates)
    if overlap := removed.intersection(candidates):
        raise ValueError(f"candidates {sorted(overlap)} are already removed; score only the kept layers")
    device = input_device(model)
    was_training = model.training
    model.eval()
    gating = attach_gates(model, "output")
    layers = get_layers(model)
    totals, count = dict.fromkeys(candidates, 0.0), 0
    try:
        for start in range(0, calib.shape[0], batch_size):
            x = calib[start:start + batch_size].to(device)
            with gating.skipping(removed):
                states = _layer_inputs(model, gating, x)
            for i in candidates:
                with gating.skipping(removed | set(range(i + 1))), _entering_first_layer(layers, states[i]):
                    totals[i] += model(input_ids=x, labels=x, use_cache=False).loss.item() * x.shape[0]
                if bar is not None:
                    bar.update(x.shape[0])
            count += x.shape[0]
    finally:
        detach_gates(model, gating, fold=False)
        model.train(was_training)
    return {i: total / count for i, total in totals.items()}

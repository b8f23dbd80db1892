"""Learnable per-layer scales ("gates") s_i, layer skipping, and folding the scales away.

Two placements, chosen by `mode`:

* ``"output"`` (the paper's): the layer's whole output, after its residual add, is multiplied:
  ``h_{i+1} = s_i * (h_i + F_i(h_i))``.  In a pre-norm model every block and the LM head start
  with a scale-invariant norm, so s_i only re-weights the layers *after* i, and the last layer's s
  does not change the loss at all.
* ``"branch"``: only the residual branches are multiplied, ``h + s_i * branch(h)``, by scaling the
  outputs of the modules the adapter lists (``o_proj``/``down_proj`` in Llama).  s_i = 0 is then
  exactly an identity layer, which is what pruning needs.

The gates of all L layers live in one parameter vector (`Gating.scales`) so the ℓ1 term, the
trajectories and the optimizer see one tensor.  Layers are wrapped, not edited; `detach_gates`
restores the plain modules (optionally folding the scales into their weights) before removal
and saving, so the saved model is a stock Hugging Face model.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from .adapters import get_adapter, get_layers, scale_branch_output, set_layers

GATE_MODES = ("output", "branch")


@dataclass(eq=False)
class Gating:
    """The gate vector plus what the forward pass needs to know (skipped layers, captures)."""

    mode: str
    scales: nn.Parameter
    skipped: set[int] = field(default_factory=set)
    capture: set[int] = field(default_factory=set)  # layers whose X_out - X_in is recorded
    diffs: dict[int, torch.Tensor] = field(default_factory=dict)
    inputs: dict[int, torch.Tensor] = field(default_factory=dict)  # X_in of captured layers
    hooks: list = field(default_factory=list)

    @property
    def n_layers(self) -> int:
        return self.scales.numel()

    def scale(self, i: int, like: torch.Tensor) -> torch.Tensor:
        # Gates stay fp32 on their own device; cast per use so device_map / bf16 models work.
        return self.scales[i].to(device=like.device, dtype=like.dtype)

    def skip(self, layers: Iterable[int]) -> None:
        """Skip `layers` from now on (they join the prune set P)."""
        self.skipped.update(layers)

    @contextlib.contextmanager
    def _skipped_as(self, skipped: set[int]) -> Iterator[None]:
        before, self.skipped = self.skipped, skipped
        try:
            yield
        finally:
            self.skipped = before

    def skipping(self, layers: Iterable[int]) -> contextlib.AbstractContextManager[None]:
        """Skip `layers` too, inside the block only."""
        return self._skipped_as(self.skipped | set(layers))

    def running(self, layers: Iterable[int]) -> contextlib.AbstractContextManager[None]:
        """Run `layers` again (even if in P), inside the block only."""
        return self._skipped_as(self.skipped - set(layers))

    @contextlib.contextmanager
    def capturing(self, layers: Iterable[int]) -> Iterator[None]:
        """Record X_in (`inputs`) and X_out - X_in (`diffs`) of `layers` in every forward pass of the block."""
        before = self.capture
        self.capture = set(layers)
        try:
            yield
        finally:
            self.capture = before
            self.forget()

    def forget(self) -> None:
        """Drop the recorded tensors (after each backward pass, they hold the graph)."""
        self.diffs.clear()
        self.inputs.clear()


class GatedLayer(nn.Module):
    """Wraps one decoder layer: skip it, scale its output (output mode), record X_out - X_in."""

    def __init__(self, layer: nn.Module, index: int, gating: Gating):
        super().__init__()
        self.layer = layer
        self.index = index
        self._gating = [gating]  # a list, so the Gating is not registered as a submodule

    def __getattr__(self, name: str):
        # Architectures read attributes such as `attention_type` off their layers.
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["layer"], name)

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        g, i = self._gating[0], self.index
        if i in g.skipped:
            return hidden_states  # identity: the layer is "masked" (in P)
        out = self.layer(hidden_states, *args, **kwargs)
        if i in g.capture:
            g.diffs[i] = out - hidden_states  # X_out - X_in, before any output scale
            g.inputs[i] = hidden_states
        if g.mode == "output":
            out = out * g.scale(i, out)
        return out


def attach_gates(model: nn.Module, mode: str = "output") -> Gating:
    """Wrap every decoder layer and create gates s_i = 1 (the model's logits are unchanged)."""
    if mode not in GATE_MODES:
        raise ValueError(f"gate must be one of {GATE_MODES}, got {mode!r}")
    layers = get_layers(model)
    if any(isinstance(layer, GatedLayer) for layer in layers):
        raise ValueError("model already has gates attached; call detach_gates first")
    device = next(model.parameters()).device
    gating = Gating(mode, nn.Parameter(torch.ones(len(layers), device=device, dtype=torch.float32)))
    if mode == "branch":
        adapter = get_adapter(model)
        for i, layer in enumerate(layers):
            for name in adapter.branch_outputs:
                module = layer.get_submodule(name)
                gating.hooks.append(module.register_forward_hook(_branch_hook(gating, i)))
    set_layers(model, nn.ModuleList(GatedLayer(layer, i, gating) for i, layer in enumerate(layers)))
    return gating


def _branch_hook(gating: Gating, i: int):
    def hook(module, args, output):
        return output * gating.scale(i, output)
    return hook


def detach_gates(model: nn.Module, gating: Gating, fold: bool = True, drop: set[int] | frozenset = frozenset()) -> None:
    """Unwrap the layers; with `fold`, bake the scales of the kept layers into their weights.

    `drop` are the layers about to be deleted: they contribute nothing afterwards, so their
    scales are not folded.  Folding is exact up to the norms' epsilon (see `fold_scales`).
    """
    for h in gating.hooks:
        h.remove()
    gating.hooks.clear()
    gating.forget()
    layers = get_layers(model)
    plain = [layer.layer if isinstance(layer, GatedLayer) else layer for layer in layers]
    set_layers(model, nn.ModuleList(plain))
    if fold:
        fold_scales(model, gating.mode, gating.scales.detach().float().cpu().tolist(), drop)


@torch.no_grad()
def fold_scales(model: nn.Module, mode: str, scales: list[float], drop: set[int] | frozenset = frozenset()) -> None:
    """Push gate values into the branch-output weights so the plain model computes the same logits.

    branch mode: ``h + s * branch(h)`` is exactly the layer with its branch outputs scaled by s.
    output mode: write ``h_i = c_i * g_i`` with ``c_i`` the product of the scales of the kept
    layers before i.  Every block starts with a scale-invariant norm (RMSNorm / LayerNorm), so
    ``g_{i+1} = g_i + branch_i(g_i) / c_i``: scaling layer i's branch outputs by ``1 / c_i`` gives
    the unscaled stream g, and the final norm before the LM head removes the last factor.  This
    needs c_i > 0 and a pre-norm model; it is exact up to the norms' epsilon.
    """
    adapter = get_adapter(model)
    layers = get_layers(model)
    if mode == "branch":
        for i, layer in enumerate(layers):
            if i not in drop:
                scale_branch_output(layer, adapter, scales[i])
        return
    if getattr(model.config, "do_layer_norm_before", True) is False:
        raise ValueError("fold_scales=True needs a pre-norm model (this OPT variant is post-norm); "
                         "use fold_scales=False")
    c = 1.0
    for i, layer in enumerate(layers):
        if i in drop:
            continue
        if not c > 0:
            raise ValueError(
                f"cannot fold output scales: the cumulative scale before layer {i} is {c:.3g} (must be > 0); "
                "use fold_scales=False (drop the scales) or a smaller lambda1")
        scale_branch_output(layer, adapter, 1.0 / c)
        c *= scales[i]

"""Deleting whole decoder layers so the result is a stock, self-consistent Hugging Face model.

Shared by TRSP and every baseline, so all of them are scored on exactly the same kind of model.
After `remove_layers` the model computes, for the kept layers, exactly what the original model
computes with the deleted layers skipped (identity), with and without the KV cache, and
`save_pretrained` + plain `AutoModelForCausalLM.from_pretrained` reproduces it.

What has to change besides the ModuleList:

* every ``layer_idx`` (it picks the KV-cache slot; a gap or duplicate breaks ``generate``);
* ``num_hidden_layers`` (models loop over ``layers[:num_hidden_layers]``; GPT-2 maps it to
  ``n_layer`` through ``attribute_map``);
* per-layer lists in the config, sliced to the kept layers: ``layer_types`` (Gemma2/3, Qwen2/3:
  which layers use a sliding window: it picks the mask and the cache type), and generally any list
  of length L whose name mentions "layer"; a heterogeneous ``per_layer_config`` is re-keyed;
* derived settings, so a config that re-derives ``layer_types`` would agree: Qwen2/3's
  ``max_window_layers`` becomes the number of kept layers below it.  Gemma3's
  ``sliding_window_pattern`` needs nothing: ``layer_types`` is saved explicitly and wins on reload;
* GPT-2 with ``scale_attn_by_inverse_layer_idx`` divides attention scores by (layer_idx + 1),
  recomputed from the index on reload; the change of factor is folded into the query weights.
"""
from __future__ import annotations

import operator
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from .adapters import get_adapter, get_layers, set_layers
from .distributed import main_writes
from ..provenance import atomic_path


def remove_layers(model: nn.Module, indices: Iterable[int]) -> nn.Module:
    """Delete decoder layers `indices` (0-based, current numbering) in place; returns the model.

    Everything is checked before anything changes, so a bad call leaves the model as it was.
    """
    layers = get_layers(model)
    n = len(layers)
    drop = _validate(indices, n)
    keep = [i for i in range(n) if i not in drop]
    adapter = get_adapter(model)
    for i in keep:
        _index_owners(layers[i], adapter.layer_idx)
    for new, old in enumerate(keep):
        _renumber(layers[old], adapter.layer_idx, old, new)
    set_layers(model, nn.ModuleList(layers[i] for i in keep))
    config = model.config.get_text_config(decoder=True)  # Gemma3ForConditionalGeneration: text_config
    shrink_config(config, keep, n)
    inner = model.get_submodule(adapter.layers.rpartition(".")[0])
    if hasattr(inner, "has_sliding_layers"):  # Qwen2/3 decide at init whether to build a sliding mask
        inner.has_sliding_layers = "sliding_attention" in (getattr(config, "layer_types", None) or [])
    return model


def _validate(indices: Iterable[int], n: int) -> set[int]:
    if isinstance(indices, (str, bytes)) or not isinstance(indices, Iterable):
        raise ValueError(f"layer indices must be an iterable of integers, got {indices!r}")
    items, ints = list(indices), []
    for i in items:
        try:
            if isinstance(i, bool):
                raise TypeError
            ints.append(operator.index(i))  # int, numpy integer, integer 0-d tensor; not 1.0 or "1"
        except TypeError:
            raise ValueError(f"layer indices must be integers, got {i!r} in {items!r}") from None
    dupes = sorted({i for i in ints if ints.count(i) > 1})
    if dupes:
        raise ValueError(f"duplicate layer indices {dupes}: list each layer to remove once")
    out = sorted(i for i in ints if not 0 <= i < n)
    if out:
        raise ValueError(f"layer indices {out} out of range: the model has {n} layers, numbered 0..{n - 1}")
    if len(ints) >= n:
        raise ValueError(f"cannot remove all {n} layers: keep at least one")
    return set(ints)


def _index_owners(layer: nn.Module, paths: tuple[str, ...]) -> list[tuple[nn.Module, str]]:
    """(module, attribute) of each adapter-listed index; a miss would silently break the KV cache."""
    owners = []
    for path in paths:
        *parents, attr = path.split(".")
        owner = layer
        for name in parents:  # through registered children only: a wrapper's __getattr__ must not pass
            owner = owner._modules.get(name) if owner is not None else None
        if owner is None or attr not in vars(owner):
            raise ValueError(f"{type(layer).__name__} has no attribute {path}: if the layers are wrapped "
                             "(gates), detach them first; otherwise fix the adapter's layer_idx")
        owners.append((owner, attr))
    return owners


def _renumber(layer: nn.Module, paths: tuple[str, ...], old: int, new: int) -> None:
    for owner, attr in _index_owners(layer, paths):
        setattr(owner, attr, new)
    for module in layer.modules():  # and any other index found, to be robust to unlisted modules
        if isinstance(getattr(module, "layer_idx", None), int):
            module.layer_idx = new
        if getattr(module, "scale_attn_by_inverse_layer_idx", False) and old != new:
            _rescale_gpt2_queries(module, old, new)


@torch.no_grad()
def _rescale_gpt2_queries(attn: nn.Module, old: int, new: int) -> None:
    """GPT-2 scales scores by 1/(layer_idx+1), recomputed from the index on reload: keep q.k fixed."""
    ratio = (new + 1) / (old + 1)
    if getattr(attn, "is_cross_attention", False):
        attn.q_attn.weight *= ratio
        attn.q_attn.bias *= ratio
    else:
        e = attn.embed_dim
        attn.c_attn.weight[:, :e] *= ratio  # Conv1D: weight [in, 3 * embed], queries first
        attn.c_attn.bias[:e] *= ratio
    attn.scaling = attn.scaling * (old + 1) / (new + 1)


def shrink_config(config, keep: list[int], n: int) -> None:
    """Slice every per-layer list of the config (length `n`) to the kept layers `keep` and set the layer count."""
    spec = getattr(config, "_heterogeneity_spec", None)
    for key, value in list(config.to_dict().items()):
        if isinstance(value, (list, tuple)) and len(value) == n and "layer" in key and not key.endswith("_ids"):
            setattr(config, key, type(value)(value[i] for i in keep))
    if isinstance(getattr(config, "max_window_layers", None), int):
        config.max_window_layers = sum(1 for i in keep if i < config.max_window_layers)
    config.num_hidden_layers = len(keep)
    if spec is not None:
        overrides = spec.per_layer_overrides
        config.per_layer_config = {new: overrides[old] for new, old in enumerate(keep) if old in overrides}


@main_writes  # under FSDP every process holds the same pruned model: rank 0 writes it
def save_model(model: nn.Module, tokenizer, out_dir: str | os.PathLike) -> Path:
    """Save model (+ tokenizer, if given) to `out_dir` atomically: a crash never leaves half a checkpoint."""
    out = Path(out_dir)
    for stale in out.parent.glob(f".{out.name}.tmp-*"):  # a crashed writer's leftovers
        pid = stale.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    with atomic_path(out) as tmp:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

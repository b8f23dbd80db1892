"""The one place where decoder architectures differ: where the layers live and what a layer adds.

Everything else (gates, removal, criteria) is written once against this table, as in SliceGPT's
adapters.  Supporting a new architecture means adding one `Adapter` row.

Findings from the installed transformers 5.24 sources (``models/<arch>/modeling_<arch>.py``):

* A decoder layer's ``forward`` returns a plain ``torch.Tensor`` (the new hidden states), not a
  tuple, for every architecture here (Llama, Qwen2/3, Mistral, Gemma2/3, OPT, GPT-2, Phi): the
  model loops ``hidden_states = layer(hidden_states, ...)``; attention weights are captured by
  hooks (``capture_outputs``), and the KV cache is a ``Cache`` object passed in as ``cache=``
  (``past_key_values=`` is a deprecated alias) and updated in place.  A wrapper that skips a
  layer must therefore return its input tensor unchanged.
* The residual adds are ``h + o_proj(..)`` and ``h + down_proj(..)`` (Llama, Qwen, Mistral),
  ``h + post_attention_layernorm(o_proj(..))`` and ``h + post_feedforward_layernorm(mlp(..))``
  (Gemma2/3: the branch is normalized after its projection, so the *norm* is the branch output),
  ``h + out_proj(..)`` / ``h + fc2(..)`` (OPT, followed only by dropout), ``h + attn.c_proj(..)`` /
  ``h + mlp.c_proj(..)`` (GPT-2, ``Conv1D`` followed by dropout) and Phi's parallel block
  ``h + self_attn.dense(..) + mlp.fc2(..)`` (dropout only).
* The layer index that selects the KV-cache slot lives on the attention module
  (``self_attn.layer_idx``; GPT-2: ``attn.layer_idx``).  Gemma3 layers also store it on the
  layer itself (Gemma2 layers do not).  OPT, GPT-2 and Phi layers do keep it (on the attention module) in 5.24.
* Gemma2/3 RMSNorm computes ``normed(x) * (1 + weight)``; Llama-style RMSNorms ``weight * normed(x)``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Adapter:
    """Where one family of decoder-only models keeps its layers and residual branches."""

    name: str
    model_types: tuple[str, ...]  # config.model_type values handled
    layers: str  # dotted path to the nn.ModuleList of decoder layers
    branch_outputs: tuple[str, ...]  # modules inside a layer whose output is added to the residual stream
    layer_idx: tuple[str, ...]  # attributes inside a layer holding its index (renumbered on removal)


_LLAMA_LIKE = dict(layers="model.layers", branch_outputs=("self_attn.o_proj", "mlp.down_proj"),
                   layer_idx=("self_attn.layer_idx",))
_GEMMA = dict(layers="model.layers", branch_outputs=("post_attention_layernorm", "post_feedforward_layernorm"))

ADAPTERS: tuple[Adapter, ...] = (
    Adapter("llama", ("llama",), **_LLAMA_LIKE),
    Adapter("qwen2", ("qwen2",), **_LLAMA_LIKE),
    Adapter("qwen3", ("qwen3",), **_LLAMA_LIKE),
    Adapter("mistral", ("mistral",), **_LLAMA_LIKE),
    Adapter("gemma2", ("gemma2",), layer_idx=("self_attn.layer_idx",), **_GEMMA),
    Adapter("gemma3", ("gemma3_text",), layer_idx=("layer_idx", "self_attn.layer_idx"), **_GEMMA),
    # Gemma3ForConditionalGeneration (what AutoModelForCausalLM builds for model_type "gemma3"):
    # the same text decoder, one level down; its per-layer config is config.text_config.
    Adapter("gemma3-multimodal", ("gemma3",), layers="model.language_model.layers",
            branch_outputs=_GEMMA["branch_outputs"], layer_idx=("layer_idx", "self_attn.layer_idx")),
    Adapter("opt", ("opt",), layers="model.decoder.layers", branch_outputs=("self_attn.out_proj", "fc2"),
            layer_idx=("self_attn.layer_idx",)),
    Adapter("gpt2", ("gpt2",), layers="transformer.h", branch_outputs=("attn.c_proj", "mlp.c_proj"),
            layer_idx=("attn.layer_idx",)),
    Adapter("phi", ("phi",), layers="model.layers", branch_outputs=("self_attn.dense", "mlp.fc2"),
            layer_idx=("self_attn.layer_idx",)),
)

# RMSNorms that multiply by (1 + weight) rather than by weight (by class name: no model imports needed).
ONE_PLUS_RMSNORMS = {"GemmaRMSNorm", "Gemma2RMSNorm", "Gemma3RMSNorm"}
PLAIN_RMSNORMS = {"LlamaRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm", "MistralRMSNorm", "RMSNorm"}


class UnsupportedArchitecture(ValueError):
    """The model's architecture has no `Adapter` row, so its layers cannot be located."""


def supported_model_types() -> list[str]:
    return sorted(t for a in ADAPTERS for t in a.model_types)


def get_adapter(model: nn.Module) -> Adapter:
    """The adapter for `model`, checked against the model (the layer path must resolve)."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    for adapter in ADAPTERS:
        if model_type in adapter.model_types:
            try:
                layers = model.get_submodule(adapter.layers)
            except AttributeError:
                break  # e.g. a bare base model (LlamaModel) rather than the *ForCausalLM class
            if isinstance(layers, nn.ModuleList):
                return adapter
            break
    raise UnsupportedArchitecture(
        f"no adapter for {type(model).__name__} (config.model_type={model_type!r}). Supported causal LMs "
        f"(loaded with AutoModelForCausalLM): model types {', '.join(supported_model_types())}. To add one, "
        "add a single Adapter row to trsp_lib/surgery/adapters.py: the dotted path of its decoder-layer ModuleList, "
        "the modules whose outputs are added to the residual stream, its layer_idx attributes and its final norm.")


def get_layers(model: nn.Module) -> nn.ModuleList:
    return model.get_submodule(get_adapter(model).layers)


def set_layers(model: nn.Module, layers: nn.ModuleList) -> None:
    """Replace the decoder-layer list (wrapping, removal) at the adapter's path."""
    parent_path, _, name = get_adapter(model).layers.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, name, layers)


@torch.no_grad()
def scale_branch_output(layer: nn.Module, adapter: Adapter, c: float) -> None:
    """Multiply the output of each residual-branch module of `layer` by `c`, by editing its weights.

    Exact in exact arithmetic, so gates folded this way leave a stock model behind.
    """
    for name in adapter.branch_outputs:
        _scale_output(layer.get_submodule(name), float(c), name)


def _scale_output(module: nn.Module, c: float, name: str) -> None:
    from transformers.pytorch_utils import Conv1D

    kind = type(module).__name__
    if isinstance(module, nn.LayerNorm) and not module.elementwise_affine:
        raise TypeError(f"cannot scale the output of {name}: it is a LayerNorm without weights "
                        "(elementwise_affine=False)")
    if isinstance(module, (nn.Linear, Conv1D, nn.LayerNorm)):
        _mul(module.weight, c)
        if getattr(module, "bias", None) is not None:
            _mul(module.bias, c)
    elif kind in ONE_PLUS_RMSNORMS:
        w = module.weight
        w.copy_((c * (1.0 + w.float()) - 1.0).to(w.dtype))  # (1 + w') = c * (1 + w)
    elif kind in PLAIN_RMSNORMS or isinstance(module, nn.RMSNorm):
        if getattr(module, "weight", None) is None:
            raise TypeError(f"cannot scale the output of {name} ({kind}): it has no weight")
        _mul(module.weight, c)
    else:
        raise TypeError(
            f"cannot scale the output of {name}: unknown module kind {kind}. Known: nn.Linear, Conv1D, "
            f"nn.LayerNorm (affine), plain RMSNorms {sorted(PLAIN_RMSNORMS)} and (1 + weight) RMSNorms "
            f"{sorted(ONE_PLUS_RMSNORMS)}; extend _scale_output in trsp_lib/surgery/adapters.py.")


def _mul(p: torch.Tensor, c: float) -> None:
    p.copy_((p.float() * c).to(p.dtype))

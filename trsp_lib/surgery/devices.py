"""Where tensors go and in which precision: the device helpers every module shares.

Kept apart from `models` (loading, GGUF conversion) because the training, evaluation and criteria
code needs only these three small functions.
"""
from __future__ import annotations

import torch
from torch import nn


def on_cuda(device: str) -> bool:
    """"cuda", "cuda:1", or "auto" (spread over every visible GPU) on a machine that has one."""
    return str(device).startswith("cuda") or (device == "auto" and torch.cuda.is_available())


def input_device(model: nn.Module) -> torch.device:
    """Where input ids go: the embedding's device (the first GPU when a device_map spreads the model)."""
    embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    return embed.weight.device if embed is not None else next(model.parameters()).device  # any other module


def resolve_dtype(dtype: torch.dtype | str | None, device: str) -> torch.dtype:
    """None: float32 on CPU (bf16 matmuls are slow there), bfloat16 on CUDA."""
    if dtype is None:
        return torch.bfloat16 if on_cuda(device) else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype not in names:
        raise ValueError(f"dtype must be one of {sorted(names)} or a torch.dtype, got {dtype!r}")
    return names[dtype]

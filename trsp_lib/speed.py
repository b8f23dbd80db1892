"""End-to-end speed of a pruned model against its dense parent, measured in one process.

Depth pruning is sold on speed ("no speed-up observed" is a common complaint about other
pruners), so every speed-up is reported as a ratio measured with the two models interleaved
(dense, pruned, dense, pruned, ...) after a warm-up, next to the ideal ratio from FLOPs.
"""
from __future__ import annotations

import statistics
import time

import torch
from torch import nn

from .surgery.adapters import get_layers
from .surgery.devices import input_device


def forward_flops(model: nn.Module, seq_len: int) -> float:
    """Multiply-add FLOPs (2 per MAC) of one causal forward pass over `seq_len` tokens.

    Counted: every matrix in the decoder layers and the LM head (2 * params * tokens), plus the
    attention scores and weighted sums (causal: ~S^2 / 2 pairs, 2 matmuls).  The embedding lookup is
    a gather and costs no multiply-adds; norms and activations are ignored (well under 1%).
    """
    layers = get_layers(model)
    layer_params = sum(p.numel() for layer in layers for p in layer.parameters() if p.ndim >= 2)
    head = model.get_output_embeddings().weight.numel()
    cfg = model.config.get_text_config(decoder=True)
    width = getattr(cfg, "num_attention_heads", 1) * (getattr(cfg, "head_dim", None)
                                                      or cfg.hidden_size // cfg.num_attention_heads)
    attention = len(layers) * 2 * 2 * width * seq_len * (seq_len + 1) / 2
    return 2.0 * seq_len * (layer_params + head) + attention


def ideal_speedup(dense: nn.Module, pruned: nn.Module, seq_len: int) -> float:
    """The speed-up if time were proportional to FLOPs."""
    return forward_flops(dense, seq_len) / forward_flops(pruned, seq_len)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()  # every GPU: a device_map model spreads one forward over several


@torch.no_grad()
def _prefill(model: nn.Module, ids: torch.Tensor) -> None:
    model(input_ids=ids, use_cache=False)


@torch.no_grad()
def _generate(model: nn.Module, ids: torch.Tensor, new_tokens: int) -> None:
    model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                   min_new_tokens=new_tokens, do_sample=False, use_cache=True, pad_token_id=0)


def _timed(fn, device: torch.device) -> float:
    _sync(device)
    t = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t


def compare_speed(dense: nn.Module, pruned: nn.Module, prefill_len: int = 256, gen_batch: int = 4,
                  prompt_len: int = 64, new_tokens: int = 128, reps: int = 5, warmup: int = 1, seed: int = 0) -> dict:
    """Prefill latency (batch 1) and generation throughput (KV cache), dense and pruned interleaved.

    Returns medians, min/max, the measured speed-ups (dense time / pruned time) and the ideal ones.
    The paper's GPU protocol is prefill_len=2048, gen_batch=64, prompt_len=64, new_tokens=128.
    """
    if reps < 1 or warmup < 0:
        raise ValueError("reps must be >= 1 and warmup >= 0")
    device = input_device(dense)
    g = torch.Generator().manual_seed(seed)
    vocab = dense.config.get_text_config(decoder=True).vocab_size
    prefill_ids = torch.randint(1, vocab, (1, prefill_len), generator=g).to(device)
    prompt_ids = torch.randint(1, vocab, (gen_batch, prompt_len), generator=g).to(device)
    models = {"dense": dense.eval(), "pruned": pruned.eval()}
    times: dict[str, dict[str, list[float]]] = {k: {"prefill": [], "generate": []} for k in models}
    for rep in range(warmup + reps):
        for name, model in models.items():
            p = _timed(lambda m=model: _prefill(m, prefill_ids), device)
            q = _timed(lambda m=model: _generate(m, prompt_ids, new_tokens), device)
            if rep >= warmup:
                times[name]["prefill"].append(p)
                times[name]["generate"].append(q)

    def summary(xs: list[float]) -> dict:
        return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}

    out = {name: {kind: summary(xs) for kind, xs in kinds.items()} for name, kinds in times.items()}
    for name in models:
        gen = out[name]["generate"]
        gen["tokens_per_s"] = gen_batch * new_tokens / gen["median"]
    out["speedup"] = {
        "prefill": out["dense"]["prefill"]["median"] / out["pruned"]["prefill"]["median"],
        "generate": out["dense"]["generate"]["median"] / out["pruned"]["generate"]["median"],
    }
    out["ideal"] = {"prefill": ideal_speedup(dense, pruned, prefill_len),
                    "generate": ideal_speedup(dense, pruned, prompt_len + new_tokens)}
    out["protocol"] = {"prefill_len": prefill_len, "gen_batch": gen_batch, "prompt_len": prompt_len,
                       "new_tokens": new_tokens, "reps": reps, "warmup": warmup, "device": str(device)}
    return out

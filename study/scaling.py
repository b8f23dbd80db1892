"""The scaling chapter's arithmetic: parameters of a Llama-style decoder and memory per GPU to train it.

Written from the public config.json fields (the book builds offline); `AutoConfig` objects work as well.
"""
from __future__ import annotations

GB = 1e9

#: The fields `memory_estimate` reads, from the config.json of meta-llama/Llama-2-{7b,13b,70b}-hf
#: (public; the book builds offline, so they are written here; `AutoConfig` objects work as well).
LLAMA2_CONFIGS: dict[str, dict[str, int]] = {
    "meta-llama/Llama-2-7b-hf": {"hidden_size": 4096, "num_attention_heads": 32, "num_key_value_heads": 32,
                                 "num_hidden_layers": 32, "intermediate_size": 11008, "vocab_size": 32000},
    "meta-llama/Llama-2-13b-hf": {"hidden_size": 5120, "num_attention_heads": 40, "num_key_value_heads": 40,
                                  "num_hidden_layers": 40, "intermediate_size": 13824, "vocab_size": 32000},
    "meta-llama/Llama-2-70b-hf": {"hidden_size": 8192, "num_attention_heads": 64, "num_key_value_heads": 8,
                                  "num_hidden_layers": 80, "intermediate_size": 28672, "vocab_size": 32000},
}


def _dims(config) -> dict[str, int]:
    c = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    get = (lambda k, d=None: c.get(k, d)) if isinstance(c, dict) else (lambda k, d=None: getattr(c, k, d))
    h, heads = get("hidden_size"), get("num_attention_heads")
    head_dim = get("head_dim") or h // heads
    return {"h": h, "L": get("num_hidden_layers"), "i": get("intermediate_size"), "V": get("vocab_size"),
            "q": heads * head_dim, "kv": (get("num_key_value_heads") or heads) * head_dim,
            "tied": bool(get("tie_word_embeddings", False))}


def n_params(config) -> dict[str, int]:
    """Parameters of a Llama-style decoder: total and per decoder layer (q, k, v, o, gate/up/down, 2 norms)."""
    d = _dims(config)
    layer = d["h"] * (2 * d["q"] + 2 * d["kv"]) + 3 * d["h"] * d["i"] + 2 * d["h"]
    embed = d["V"] * d["h"] * (1 if d["tied"] else 2)
    return {"total": embed + d["L"] * layer + d["h"], "layer": layer}


def memory_estimate(config, n_gpus: int = 1, micro_batch: int = 1, seq_len: int = 2048, master_bytes: int | None = None,
                    checkpointing: bool = False) -> dict[str, float]:
    """GB per GPU to train every weight with AdamW, as trsp does in stage 2 and the fine-tune.

    `master_bytes` per trained weight (gradients and each AdamW moment take the same): 2 on one GPU
    (trsp trains the bf16 model as loaded), 4 under FSDP (accelerate's mixed precision bf16 keeps
    fp32 master weights); FSDP divides weights, gradients and moments by `n_gpus` and adds the bf16
    copies of the two layers gathered at a time. trsp's glue also keeps the plain bf16 model each
    process evaluates and removes layers from (`plain_copy`: on the GPU with --device cuda, in CPU
    RAM with --device cpu; not in `total`). Activations, bf16, flash attention, per token and layer:
    norm inputs and outputs, q, k, v, attention output, gate, up, SiLU(gate) and their product
    (4h + q + 2kv + 4i values); with `checkpointing` only each layer's input plus one layer's set.
    Plus fp32 logits and their gradient. `micro_batch`: sequences per GPU per micro-batch.
    """
    d, p = _dims(config), n_params(config)
    n, master = p["total"], master_bytes or (2 if n_gpus == 1 else 4)
    gathered = 0 if n_gpus == 1 else 2 * 2 * p["layer"]
    tokens = micro_batch * seq_len
    per_layer = tokens * (4 * d["h"] + d["q"] + 2 * d["kv"] + 4 * d["i"]) * 2
    acts = (tokens * d["L"] * d["h"] * 2 + per_layer) if checkpointing else d["L"] * per_layer
    out = {"params_b": n / 1e9, "weights": (master * n / n_gpus + gathered) / GB, "gradients": master * n / n_gpus / GB,
           "optimizer": 2 * master * n / n_gpus / GB, "activations": (acts + tokens * d["V"] * 4 * 2) / GB,
           "plain_copy": (0 if n_gpus == 1 else 2 * n) / GB}
    out["total"] = out["weights"] + out["gradients"] + out["optimizer"] + out["activations"]
    return out

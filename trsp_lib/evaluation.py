"""Perplexity, the first metric of the study (zero-shot and speed come later).

Protocol (the one SparseGPT, SLEB and TRSP's code use for WikiText-2): tokenize the whole test
text once (documents joined by blank lines, no special tokens), cut it into non-overlapping
windows of `seq_len` tokens, drop the last partial window, score every next-token prediction
inside each window, and report exp(mean negative log-likelihood) over all scored tokens.
Each window starts without context, so perplexity falls as `seq_len` grows: only compare numbers
measured with the same `seq_len` and the same tokenizer. A window starts the way the tokenizer
starts a sequence: with BOS for tokenizers that add one (Gemma, Llama; `data.bos_prefix`), then
`seq_len - 1` text tokens, all of them scored.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .data import bos_prefix, eval_tokens
from .log import progress
from .surgery.devices import input_device


@torch.no_grad()
def perplexity(model: nn.Module, tokenizer, text: str | torch.Tensor, seq_len: int = 512, batch_size: int = 4,
               max_tokens: int | None = None, desc: str = "perplexity") -> float:
    """exp(mean NLL) of `model` on `text` (a string, or 1-D token ids), in non-overlapping windows.

    `max_tokens` truncates the text first: CPU runs score a fixed prefix of the test split.
    """
    if isinstance(text, str):
        tokens = torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)
    else:
        tokens = text
    if max_tokens is not None:
        tokens = tokens[:max_tokens]
    if tokens.ndim != 1:
        raise ValueError(f"tokens must be 1-D, got shape {tuple(tokens.shape)}")
    prefix = bos_prefix(tokenizer)
    body = seq_len - len(prefix)
    n_windows = tokens.numel() // body if body > 0 else 0
    if n_windows < 1:
        raise ValueError(f"text has {tokens.numel()} tokens, fewer than one window of seq_len={seq_len}")
    windows = tokens[: n_windows * body].view(n_windows, body)
    windows = torch.cat([torch.tensor(prefix, dtype=windows.dtype).expand(n_windows, -1), windows], dim=1)
    device = input_device(model)
    was_training = model.training
    model.eval()
    nll, count = 0.0, 0
    for start in progress(range(0, n_windows, batch_size), desc=desc, unit="batch", leave=False):
        x = windows[start:start + batch_size].to(device)
        logits = model(input_ids=x, use_cache=False).logits[:, :-1].float()
        target = x[:, 1:]
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="sum")
        nll += loss.item()
        count += target.numel()
    model.train(was_training)
    ppl = math.exp(nll / count)
    if not math.isfinite(ppl):
        raise FloatingPointError("perplexity is not finite: the model produces NaN/inf logits")
    return ppl


def perplexities(model: nn.Module, tokenizer, texts: dict[str, str], evals, desc: str = "ppl") -> dict[str, float]:
    """`perplexity` on each text of `texts` (label -> built-in name or file), cut and windowed as `evals` says
    (an `EvalSettings`: window length, tokens per text, windows per batch): {label: perplexity}."""
    out = {}
    for label, source in texts.items():
        ids = eval_tokens(tokenizer, source, evals.eval_max_tokens)
        out[label] = perplexity(model, tokenizer, ids, seq_len=evals.eval_seq_len, batch_size=evals.eval_batch_size,
                                desc=f"{desc} {label}")
    return out

"""Checks for assignment 3 (predict the speed-up), called by the notebook's nbgrader test cells.

Each check runs the student's function on seeded inputs against trsp_lib and prints one line on
success.  On failure it raises AssertionError with the input, the expected and obtained values, and a
hint naming the usual mistake when the wrong answer matches one, so the message teaches, not just
judges.  nbgrader's test cells call it: a failing check loses that cell's points.  This file ships with
the student version and is overwritten by the teacher's copy when nbgrader autogrades.
"""
from __future__ import annotations

import copy
import itertools
import math
import sys
from typing import Any, Callable

import torch
from torch import nn

import trsp_lib.speed
from trsp_lib.models import tiny_model
from trsp_lib.surgery.removal import remove_layers
from trsp_lib.speed import ideal_speedup

FILL_IN = ("fill in the function first: replace the `raise NotImplementedError` line with your code, "
           "then run that cell and this one again")


def _name(fn: Callable) -> str:
    return getattr(fn, "__name__", "your function")


def _call(fn: Callable, where: str, *args, forbidden: str = "", **kwargs) -> Any:
    """Call the student's function, turning NotImplementedError and crashes into a readable failure.

    `forbidden` is the library file that holds the answer: a call into it during the student's
    function (however it was imported or renamed) fails, since the assignment is to write it."""
    calls: list[str] = []

    def watch(frame, event, arg):
        if event == "call" and frame.f_code.co_filename == forbidden:
            calls.append(frame.f_code.co_name)

    previous = sys.getprofile()
    sys.setprofile(watch if forbidden else previous)
    try:
        result = fn(*args, **kwargs)
    except NotImplementedError:
        raise AssertionError(f"{_name(fn)} raised NotImplementedError: {FILL_IN}.") from None
    except Exception as err:
        raise AssertionError(f"{_name(fn)} crashed on {where}: {type(err).__name__}: {err}") from err
    finally:
        sys.setprofile(previous)
    if calls:
        module = forbidden.rsplit("/", 1)[-1].removesuffix(".py")
        raise _fail(fn, where, "your own computation", f"a call of the library's trsp_lib.{module}.{calls[0]}",
                    "the assignment is to write this yourself with torch operations; calling the library's "
                    "reference implementation earns no marks")
    return result


def _fail(fn: Callable, where: str, expected: Any, got: Any, hint: str) -> AssertionError:
    return AssertionError(f"{_name(fn)} is wrong on {where}\n  expected: {expected}\n  got:      {got}\n  hint: {hint}")


# ---- the ideal speed-up ---------------------------------------------------------------------------

#: (n_layers, n_removed, hidden, vocab, seq_len, intermediate): fixed cases where the usual mistakes are far off
SPEEDUP_CASES = ((8, 2, 32, 2048, 128, 64), (12, 3, 64, 1024, 1024, 256), (30, 8, 64, 8192, 256, 192))


def _flops(n_layers: int, hidden: int, vocab: int, seq_len: int, intermediate: int,
           attention: str = "causal", lm_head: int = 1, mlp: int = 3) -> float:
    """Closed form of trsp_lib.speed.forward_flops for a Llama without GQA, plus the usual mistakes."""
    pairs = {"causal": seq_len * (seq_len + 1) / 2, "none": 0.0, "full": seq_len ** 2}[attention]
    per_layer = 2 * seq_len * (4 * hidden ** 2 + mlp * hidden * intermediate) + 2 * 2 * hidden * pairs
    return n_layers * per_layer + lm_head * 2 * seq_len * vocab * hidden


_SPEEDUP_HINTS = {
    "lm_head=0": "the LM head (a vocab x hidden matrix, 2*seq_len*vocab*hidden FLOPs) runs whatever you remove, so "
               "the ratio is below n_layers / (n_layers - n_removed): count it in both the dense and pruned FLOPs",
    "lm_head=2": "the embedding lookup is a gather and costs no multiply-adds: count the LM head once, not twice",
    "attention=none": "include attention's scores QK^T and weighted sum AV: per layer 2 matmuls of hidden "
                      "multiply-adds per query-key pair, seq_len*(seq_len+1)/2 pairs (causal); they grow with seq_len^2",
    "attention=full": "attention is causal: token t attends to t+1 positions, so seq_len*(seq_len+1)/2 pairs, "
                      "not seq_len^2",
    "mlp=2": "a Llama MLP has three matrices (gate_proj, up_proj, down_proj): 3 * hidden * intermediate weights",
}


def _speedup_hint(case: dict, got: float) -> str:
    L, n = case["n_layers"], case["n_removed"]
    shape = {k: case[k] for k in ("hidden", "vocab", "seq_len", "intermediate")}
    right = {"attention": "causal", "lm_head": 1, "mlp": 3}
    for attention, lm_head, mlp in itertools.product(("causal", "none", "full"), (1, 0, 2), (3, 2)):
        kw = dict(attention=attention, lm_head=lm_head, mlp=mlp)
        ratio = _flops(L, **shape, **kw) / _flops(L - n, **shape, **kw)
        for inverted in (False, True):
            value = 1 / ratio if inverted else ratio
            if abs(got - value) <= 1e-4 * abs(value):
                hints = [_SPEEDUP_HINTS[f"{k}={v}"] for k, v in kw.items() if v != right[k]]
                if inverted:
                    hints.insert(0, "the speed-up is dense FLOPs / pruned FLOPs (> 1), not pruned / dense")
                if hints:
                    return "; ".join(hints)
    return ("count 2 FLOPs per weight per token for every matrix of the decoder layers and of the LM head, plus "
            "attention's QK^T and AV (causal); norms and the embedding lookup are negligible or free (see the "
            "docstring of trsp_lib.speed.forward_flops)")


def _llama(n_layers: int, hidden: int, vocab: int, intermediate: int) -> nn.Module:
    heads = 4
    return tiny_model("llama", n_layers=n_layers, hidden_size=hidden, intermediate_size=intermediate,
                      vocab_size=vocab, num_attention_heads=heads, num_key_value_heads=heads, head_dim=hidden // heads)


def speedup_cases(n_random: int = 3, seed: int = 0) -> list[dict]:
    """The fixed cases, then `n_random` seeded random Llama shapes."""
    keys = ("n_layers", "n_removed", "hidden", "vocab", "seq_len", "intermediate")
    cases = [dict(zip(keys, c)) for c in SPEEDUP_CASES]
    g = torch.Generator().manual_seed(seed)

    def pick(options):
        return options[int(torch.randint(len(options), (), generator=g))]

    for _ in range(n_random):
        L = pick(range(4, 17))
        hidden = pick((32, 48, 64))
        cases.append(dict(n_layers=L, n_removed=pick(range(1, L)), hidden=hidden, vocab=pick((256, 1000, 4096)),
                          seq_len=pick((16, 64, 256, 1024)), intermediate=hidden * pick((2, 3, 4))))
    return cases


def check_speedup_prediction(fn: Callable, n_random: int = 3, seed: int = 0, rtol: float = 0.02) -> None:
    """Grade ``predict_speedup(n_layers, n_removed, hidden, vocab, seq_len, intermediate)`` against
    trsp_lib.speed.ideal_speedup on tiny Llamas of those shapes (no GQA), within `rtol` relative."""
    cases = speedup_cases(n_random, seed)
    worst = 0.0
    for k, case in enumerate(cases):
        where = f"case {k + 1} of {len(cases)}: {case}"
        got = _call(fn, where, **case, forbidden=trsp_lib.speed.__file__)
        try:
            got = float(got)
        except (TypeError, ValueError):
            raise _fail(fn, where, "a number", f"{type(got).__name__} {got!r}", "return the ratio as a float") from None
        dense = _llama(case["n_layers"], case["hidden"], case["vocab"], case["intermediate"])
        drop = torch.randperm(case["n_layers"], generator=torch.Generator().manual_seed(k))[:case["n_removed"]]
        pruned = remove_layers(copy.deepcopy(dense), drop.tolist())
        expected = ideal_speedup(dense, pruned, case["seq_len"])
        err = abs(got - expected) / expected if math.isfinite(got) else math.inf
        if not err <= rtol:
            raise _fail(fn, where, f"{expected:.4f}  (trsp_lib.speed.ideal_speedup: dense FLOPs / pruned FLOPs)",
                        f"{got:.4f}  ({err:.1%} off; {rtol:.0%} allowed)", _speedup_hint(case, got))
        worst = max(worst, err)
    print(f"✓ {_name(fn)} passed {len(cases)} cases: within {rtol:.0%} of trsp_lib.speed.ideal_speedup "
          f"(worst {worst:.2%})")

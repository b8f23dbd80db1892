"""Write the hashed expected values into the released checks files (teacher only; never released).

The checks files compare a student's value with hashes of the right value and of the usual wrong
ones on fixed inputs, so they hold no code that computes an answer.  This script computes those
values: assignment 1 with the reference loss below, assignment 3 with the library's FLOP count on
tiny Llamas (`trsp_lib.speed.forward_flops`) and the closed form below for the usual mistakes.

    python classroom/teacher/expected.py          # rewrite the blocks between BEGIN/END EXPECTED
    python classroom/teacher/expected.py --check  # exit 1 if a checks file is out of date (a test runs this)
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import itertools
import re
import sys
from pathlib import Path

import torch

SOURCE = Path(__file__).resolve().parents[1] / "source"
FILES = {"a1": SOURCE / "a1_stage2_loss" / "a1_checks.py", "a3": SOURCE / "a3_predict_speedup" / "a3_checks.py"}


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_checks", FILES[name])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- assignment 1: the reference loss and the usual mistakes --------------------------------------

def per_token(d: torch.Tensor, norm: str, dim: int = -1) -> torch.Tensor:
    return d.norm(dim=dim) if norm == "l2" else d.abs().sum(dim=dim)


def stage2_reference(x_in: torch.Tensor, x_out: torch.Tensor, norm: str = "l2") -> torch.Tensor:
    return per_token(x_out - x_in, norm).mean()


def stage2_mistakes(d: torch.Tensor, norm: str) -> dict[str, torch.Tensor]:
    t = per_token(d, norm)
    return {
        "frobenius": d.norm() if norm == "l2" else d.abs().sum(),
        "squared": (t ** 2).mean(),
        "mse": (d ** 2).mean(),
        "sum": t.sum(),
        "sum_tokens": t.sum(dim=-1).mean(),
        "sum_batch": t.sum(dim=0).mean(),
        "mean_hidden": d.abs().mean() if norm == "l1" else (t / d.shape[-1] ** 0.5).mean(),
        "other_norm": per_token(d, "l1" if norm == "l2" else "l2").mean(),
        "wrong_dim": per_token(d, norm, dim=1).mean(),
    }


def a1_block(checks) -> tuple[dict, dict]:
    expected, mistakes = {}, {}
    for k in range(len(checks.VALUE_CASES)):
        x_in, x_out, norm = checks.value_inputs(k)
        x_in, x_out = x_in.double(), x_out.double()
        tag = f"a1|{k}"
        expected[tag] = checks._digest(tag, checks._bin(float(stage2_reference(x_in, x_out, norm)), checks.RTOL))
        mistakes[tag] = {key: checks._digest(f"{tag}|{key}", checks._bin(float(v), checks.MISTAKE_RTOL))
                         for key, v in stage2_mistakes(x_out - x_in, norm).items() if float(v) > 0}
    return expected, mistakes


# ---- assignment 3: the library's FLOP count and the closed form of the usual mistakes -------------

def flops(n_layers: int, hidden: int, vocab: int, seq_len: int, intermediate: int,
          attention: str = "causal", lm_head: int = 1, mlp: int = 3) -> float:
    """Closed form of trsp_lib.speed.forward_flops for a Llama without GQA (tests check they agree), plus mistakes."""
    pairs = {"causal": seq_len * (seq_len + 1) / 2, "none": 0.0, "full": seq_len ** 2}[attention]
    per_layer = 2 * seq_len * (4 * hidden ** 2 + mlp * hidden * intermediate) + 2 * 2 * hidden * pairs
    return n_layers * per_layer + lm_head * 2 * seq_len * vocab * hidden


def speedup_reference(n_layers, n_removed, hidden, vocab, seq_len, intermediate) -> float:
    shape = dict(hidden=hidden, vocab=vocab, seq_len=seq_len, intermediate=intermediate)
    return flops(n_layers, **shape) / flops(n_layers - n_removed, **shape)


def llama(n_layers: int, hidden: int, vocab: int, intermediate: int):
    from trsp_lib.models import tiny_model
    heads = 4
    return tiny_model("llama", n_layers=n_layers, hidden_size=hidden, intermediate_size=intermediate,
                      vocab_size=vocab, num_attention_heads=heads, num_key_value_heads=heads, head_dim=hidden // heads)


def library_speedup(case: dict, k: int) -> float:
    """dense FLOPs / pruned FLOPs as the library counts them, on a tiny Llama with the layers deleted."""
    from trsp_lib.surgery.removal import remove_layers
    from trsp_lib.speed import ideal_speedup
    dense = llama(case["n_layers"], case["hidden"], case["vocab"], case["intermediate"])
    drop = torch.randperm(case["n_layers"], generator=torch.Generator().manual_seed(k))[:case["n_removed"]]
    return ideal_speedup(dense, remove_layers(copy.deepcopy(dense), drop.tolist()), case["seq_len"])


def speedup_mistakes(case: dict) -> dict[str, float]:
    L, n = case["n_layers"], case["n_removed"]
    shape = {k: case[k] for k in ("hidden", "vocab", "seq_len", "intermediate")}
    right = {"attention": "causal", "lm_head": 1, "mlp": 3}
    out = {}
    for attention, lm_head, mlp in itertools.product(("causal", "none", "full"), (1, 0, 2), (3, 2)):
        kw = dict(attention=attention, lm_head=lm_head, mlp=mlp)
        ratio = flops(L, **shape, **kw) / flops(L - n, **shape, **kw)
        wrong = [f"{k}={v}" for k, v in kw.items() if v != right[k]]
        for inverted in (False, True):
            parts = (["inverted"] if inverted else []) + wrong
            if parts:
                out[",".join(parts)] = 1 / ratio if inverted else ratio
    return out


def a3_block(checks) -> tuple[dict, dict]:
    expected, mistakes = {}, {}
    for k, values in enumerate(checks.VALUE_CASES):
        case = dict(zip(checks.KEYS, values))
        tag = f"a3|{k}"
        expected[tag] = checks._digest(tag, checks._bin(library_speedup(case, k), 0.02))
        mistakes[tag] = {key: checks._digest(f"{tag}|{key}", checks._bin(v, checks.MISTAKE_RTOL))
                         for key, v in speedup_mistakes(case).items()}
    return expected, mistakes


# ---- writing the blocks ----------------------------------------------------------------------------

BLOCK = re.compile(r"(# BEGIN EXPECTED[^\n]*\n).*?(# END EXPECTED)", re.S)


def render(expected: dict, mistakes: dict) -> str:
    lines = ["EXPECTED: dict = {"] + [f"    {k!r}: {v!r}," for k, v in expected.items()] + ["}", "MISTAKES: dict = {"]
    for tag, table in mistakes.items():
        lines.append(f"    {tag!r}: {{")
        lines += [f"        {k!r}: {v!r}," for k, v in table.items()]
        lines.append("    },")
    return "\n".join(lines + ["}"]) + "\n"


def updated(name: str) -> tuple[str, str]:
    checks = load(name)
    block = render(*(a1_block if name == "a1" else a3_block)(checks))
    old = FILES[name].read_text()
    return old, BLOCK.sub(lambda m: m.group(1) + block + m.group(2), old, count=1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="only check that the checks files are up to date")
    args = ap.parse_args()
    stale = []
    for name in FILES:
        old, new = updated(name)
        if old != new:
            stale.append(str(FILES[name]))
            if not args.check:
                FILES[name].write_text(new)
    if args.check and stale:
        print(f"out of date: {', '.join(stale)}; run: python classroom/teacher/expected.py", file=sys.stderr)
        return 1
    print(("rewrote " + ", ".join(stale)) if stale and not args.check else "the checks files are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())

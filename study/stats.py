"""The study's statistics, in one place: standard errors, the tie rule, the paired bootstrap over the same
zero-shot items, and the seed rule for perplexity. Notebooks call these rather than re-deriving them, so a rule
(what counts as a tie) is written once.
"""
from __future__ import annotations

import math


#: Two zero-shot averages closer than this many standard errors of their difference are a tie.
TIE_SE = 2.0


def diff_se(*ses: float) -> float:
    """Standard error of a difference of independent estimates."""
    return math.sqrt(sum(s * s for s in ses))


def is_tie(gap: float, se: float) -> bool:
    """The study's tie rule: |gap| < TIE_SE standard errors."""
    return abs(gap) < TIE_SE * se


def verdict(gap: float, se: float, positive: str, negative: str, tie: str = "tie") -> str:
    """`tie` within the tie rule, else `positive` when gap > 0 and `negative` when not."""
    return tie if is_tie(gap, se) else (positive if gap > 0 else negative)


def item_correctness(rows: list[dict]) -> dict:
    """Per task, each item's correctness averaged over `rows` (the seeds of one method: the same items).

    Needs rows scored with per-item records (`zs_items`, from the 500-item runs)."""
    import numpy as np

    from trsp_lib.zeroshot import unpack_items

    rows = [r for r in rows if "zs_items" in r]  # perplexity-only seeds take no part
    if not rows:
        raise ValueError("no row has a per-item zero-shot record; compute them with a zs limit (e.g. 500)")
    tasks = list(rows[0]["zs_items"])
    return {t: np.mean([unpack_items(r["zs_items"][t], r["zs_n"][t]) for r in rows], axis=0) for t in tasks}


def paired_bootstrap(a: list[dict], b: list[dict], n_boot: int = 4000, seed: int = 0, level: float = 0.95) -> dict:
    """The zero-shot average of `a` minus that of `b`, paired on the same items, with a bootstrap interval.

    Each side's per-item correctness is averaged over its rows (seeds); items are resampled within each
    task (the average is the plain mean of per-task accuracies), the same resample for both sides, which
    is what pairing buys: item difficulty cancels. Returns diff, lo, hi and the same per task."""
    import numpy as np

    ia, ib = item_correctness(a), item_correctness(b)
    if ia.keys() != ib.keys() or any(len(ia[t]) != len(ib[t]) for t in ia):
        raise ValueError("the two sides were scored on different items; use the same zs limit and seed")
    rng = np.random.default_rng(seed)
    q = ((1 - level) / 2, (1 + level) / 2)
    per_task, boots = {}, []
    for t in ia:
        d = ia[t] - ib[t]
        draws = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(axis=1)
        boots.append(draws)
        lo, hi = np.quantile(draws, q)
        per_task[t] = {"diff": float(d.mean()), "lo": float(lo), "hi": float(hi)}
    avg = np.mean(boots, axis=0)
    lo, hi = np.quantile(avg, q)
    return {"diff": float(np.mean([p["diff"] for p in per_task.values()])), "lo": float(lo), "hi": float(hi),
            "tasks": per_task, "n_items": {t: len(v) for t, v in ia.items()},
            "n_seeds": (sum("zs_items" in r for r in a), sum("zs_items" in r for r in b))}


def seed_spread(values: list[float]) -> dict:
    """Mean, sample sd, min and max of one metric over calibration seeds."""
    import statistics

    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return {"mean": statistics.fmean(values), "sd": sd, "min": min(values), "max": max(values), "n": len(values)}


def beyond_spread(a: list[float], b: list[float]) -> bool:
    """The study's seed rule: a difference holds only when the two seed ranges do not overlap
    (every seed of one side beats every seed of the other)."""
    return max(a) < min(b) or max(b) < min(a)

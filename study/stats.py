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


def item_matrix(rows: list[dict]) -> dict:
    """Per task, a (seeds x items) 0/1 matrix of each row's per-item correctness (the seeds of one method, the
    same items). Needs rows scored with per-item records (`zs_items`, from the 500-item runs)."""
    import numpy as np

    from trsp_lib.zeroshot import unpack_items

    rows = [r for r in rows if "zs_items" in r]  # perplexity-only seeds take no part
    if not rows:
        raise ValueError("no row has a per-item zero-shot record; compute them with a zs limit (e.g. 500)")
    return {t: np.array([unpack_items(r["zs_items"][t], r["zs_n"][t]) for r in rows], dtype=float)
            for t in rows[0]["zs_items"]}


def paired_bootstrap(a: list[dict], b: list[dict], n_boot: int = 4000, seed: int = 0, level: float = 0.95,
                     seeds: bool = True) -> dict:
    """The zero-shot average of `a` minus that of `b`, paired on the same items, with a bootstrap interval.

    Hierarchical (`seeds`): each draw resamples each side's seeds with replacement (one draw for every task:
    a seed is one model), then the items within each task, the same items for both sides (pairing: item
    difficulty cancels); the average is the plain mean of per-task accuracies. So the interval holds the
    spread between calibration seeds as well as between items. `seeds=False` averages the seeds first and
    resamples items only (the study's earlier interval). Returns diff, lo, hi and the same per task."""
    import numpy as np

    ma, mb = item_matrix(a), item_matrix(b)
    if ma.keys() != mb.keys() or any(ma[t].shape[1] != mb[t].shape[1] for t in ma):
        raise ValueError("the two sides were scored on different items; use the same zs limit and seed")
    rng = np.random.default_rng(seed)
    na, nb = len(next(iter(ma.values()))), len(next(iter(mb.values())))
    pick_a = rng.integers(0, na, size=(n_boot, na)) if seeds else None
    pick_b = rng.integers(0, nb, size=(n_boot, nb)) if seeds else None
    q = ((1 - level) / 2, (1 + level) / 2)
    per_task, boots = {}, []
    for t in ma:
        items = rng.integers(0, ma[t].shape[1], size=(n_boot, ma[t].shape[1]))
        if seeds:  # (n_boot, items): each draw's seed-averaged correctness, then its items
            d = ma[t][pick_a].mean(axis=1) - mb[t][pick_b].mean(axis=1)
            draws = np.take_along_axis(d, items, axis=1).mean(axis=1)
        else:
            draws = (ma[t].mean(axis=0) - mb[t].mean(axis=0))[items].mean(axis=1)
        boots.append(draws)
        lo, hi = np.quantile(draws, q)
        per_task[t] = {"diff": float(ma[t].mean() - mb[t].mean()), "lo": float(lo), "hi": float(hi)}
    lo, hi = np.quantile(np.mean(boots, axis=0), q)
    return {"diff": float(np.mean([p["diff"] for p in per_task.values()])), "lo": float(lo), "hi": float(hi),
            "tasks": per_task, "n_items": {t: m.shape[1] for t, m in ma.items()}, "n_seeds": (na, nb),
            "resampled": "seeds and items" if seeds else "items"}


def seed_spread(values: list[float]) -> dict:
    """Mean, sample sd, min and max of one metric over calibration seeds."""
    import statistics

    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return {"mean": statistics.fmean(values), "sd": sd, "min": min(values), "max": max(values), "n": len(values)}


def beyond_spread(a: list[float], b: list[float]) -> bool:
    """The study's seed rule: a difference holds only when the two seed ranges do not overlap
    (every seed of one side beats every seed of the other)."""
    return max(a) < min(b) or max(b) < min(a)

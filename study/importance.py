"""Layer importance as each method sees it: TRSP's gates after its first stage-1 round beside the one-shot
criteria's per-layer scores (low = removed first), their ranks, how much they agree, and which layers each
method removes. Returns values, tables and figures; the importance chapter writes the sentences.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .gates import NAN, arrays, listing, new_figure
from .style import ABSURD, figsize, fmt, method_name

#: The column of TRSP's first-round gates among the criteria's scores.
TRSP = "trsp (round-1 gate)"
#: Two rankings agree when their Spearman correlation is at least this.
AGREE = 0.5


def first_round_gates(trajectory: list[dict]) -> list[float]:
    """Every layer's gate at the end of stage 1's first round (before any layer is selected)."""
    scales, stage, rounds = arrays(trajectory)
    return scales[(stage == 1) & (rounds == 0)][-1].tolist()


def scores_frame(rows: list[dict], scores: dict[str, list[float]]) -> pd.DataFrame:
    """One row per layer, one column per criterion: TRSP's first-round gate, then the one-shot scores."""
    trsp = next(r for r in rows if r["method"] == "trsp")
    return pd.DataFrame({TRSP: first_round_gates(trsp["trajectory"]), **scores})


def ranks(scores: pd.DataFrame) -> pd.DataFrame:
    """1 = the lowest score = the layer a criterion removes first (ties share the lower rank)."""
    return scores.rank(method="min").astype(int)


def _pair(a: str, b: str) -> str:
    return f"{method_name(a)} and {method_name(b)}"


def agreement(scores: pd.DataFrame, n_remove: int) -> dict[str, object]:
    """Spearman correlations among the one-shot criteria and with TRSP's gates, the layers every one-shot criterion
    puts among its `n_remove` lowest, and how tightly TRSP's first-round gates sit together."""
    rho = scores.corr(method="spearman")
    others = [c for c in scores.columns if c != TRSP]
    pairs = sorted((rho.loc[a, b], a, b) for i, a in enumerate(others) for b in others[i + 1:])
    rank = ranks(scores)
    common = sorted(set.intersection(*(set(rank.index[rank[c] <= n_remove]) for c in others))) if others else []
    with_trsp = rho.loc[TRSP, others].dropna() if others else pd.Series(dtype=float)
    gates = scores[TRSP].to_numpy()
    q1, q3 = np.percentile(gates, [25, 75])
    verdicts = {"agree_at": AGREE, "oneshot_verdict": "broadly agree" if pairs and pairs[0][0] >= AGREE
                else "do not all agree", "trsp_verdict": "agree" if with_trsp.max() >= AGREE else "hardly agree"}
    return {**verdicts, "rho_min": pairs[0][0] if pairs else NAN,
            "rho_min_pair": _pair(*pairs[0][1:]) if pairs else "none",
            "rho_max": pairs[-1][0] if pairs else NAN, "rho_max_pair": _pair(*pairs[-1][1:]) if pairs else "none",
            "common_layers": listing(common), "n_common": len(common),
            "rho_trsp_min": with_trsp.min() if len(with_trsp) else NAN,
            "rho_trsp_max": with_trsp.max() if len(with_trsp) else NAN,
            "rho_trsp_max_with": method_name(with_trsp.idxmax()) if len(with_trsp) else "none",
            "gate_drop": 1 - float(np.median(gates)), "gate_iqr": q3 - q1, "gate_min": gates.min(),
            "gate_max": gates.max(), "n_gates": len(gates), "common": common}


def removal_values(rows: list[dict], common: list[int]) -> dict[str, object]:
    """Which layers TRSP, reverse order and LaCo remove, which rows collapsed (perplexity above `ABSURD`),
    the worst perplexity among the others, and the dense model's."""
    by = {r["method"]: r for r in rows if r["method"] != "dense"}
    ppl = {m: r.get("ppl_wiki", NAN) for m, r in by.items()}
    collapsed = [m for m, p in ppl.items() if p > ABSURD]
    fine = {m: p for m, p in ppl.items() if m not in collapsed and p == p}
    worst = max(fine, key=fine.get) if fine else None
    trsp = by.get("trsp", {}).get("removed", [])
    return {"trsp_removed": listing(sorted(trsp)), "trsp_in_common": len(set(trsp) & set(common)),
            "reverse_removed": listing(sorted(by.get("reverse", {}).get("removed", []))),
            "laco_removed": listing(sorted(by.get("laco", {}).get("removed", []))),
            "n_collapsed": len(collapsed), "collapsed": listing(method_name(m) for m in collapsed),
            "dense_ppl": next((r.get("ppl_wiki", NAN) for r in rows if r["method"] == "dense"), NAN),
            "worst_ppl": fine.get(worst, NAN), "worst_ppl_method": method_name(worst) if worst else "none"}


def rank_figure(rank: pd.DataFrame, n_remove: int) -> Figure:
    """Each criterion's rank of each layer (1 = removed first) as a colour; the `n_remove` first also as numbers."""
    fig = new_figure(figsize(0.1 + 0.06 * rank.shape[1]), layout="constrained")
    ax = fig.add_subplot()
    n = len(rank)
    im = ax.imshow(rank.T.values, cmap="viridis", aspect="auto", vmin=1, vmax=n)
    for (i, layer), r in np.ndenumerate(rank.T.values):
        if r <= n_remove:
            ax.text(layer, i, r, ha="center", va="center", fontsize=9, color="white", fontweight="bold")
    ax.set_yticks(range(rank.shape[1]), [method_name(c) for c in rank.columns])
    ax.set_xticks(range(0, n, 2 if n > 16 else 1))
    ax.set_xlabel("layer index")
    ax.grid(False)
    fig.colorbar(im, ax=ax, label="rank (1 = least important)", pad=0.01,
                 ticks=sorted({1, n // 3, 2 * n // 3, n}))
    return fig


def removal_figure(rows: list[dict]) -> Figure:
    """Which layers each method removes (a filled square), with the pruned model's Wikipedia perplexity at the
    right ("> 10⁶" where it collapsed)."""
    methods = [r for r in rows if r["method"] != "dense"]
    n = max(r["n_layers"] for r in methods)
    grid = np.zeros((len(methods), n))
    for k, r in enumerate(methods):
        grid[k, r["removed"]] = 1
    fig = new_figure(figsize(0.1 + 0.045 * len(methods)), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(grid, cmap="Greys", aspect="auto", vmin=0, vmax=1.4)
    ax.set_yticks(range(len(methods)), [method_name(r["method"]) for r in methods])
    ax.set_xticks(range(0, n, 2 if n > 16 else 1))
    ax.set_xlabel("layer index")
    ax.grid(False)
    right = ax.secondary_yaxis("right")
    right.set_yticks(range(len(methods)), [fmt(r.get("ppl_wiki")) for r in methods])
    right.set_ylabel("perplexity, Wikipedia")
    return fig

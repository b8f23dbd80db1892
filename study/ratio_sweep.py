"""TRSP and a baseline (alone and + fine-tune) at each fraction of layers removed: the sweep's frame, its
figure, its table and the counts the baselines chapter quotes."""
from __future__ import annotations

from . import runner
from .style import chance_line, figsize, method_name, plain_log_axis, reference_line


def frame(P):
    """One line per sweep row: its study label as "method", the ratio, perplexities, zero-shot and its s.e."""
    import pandas as pd
    from trsp_lib.zeroshot import zs_stderr

    return pd.DataFrame([{**r, "method": r["label"], "zs_se": zs_stderr(r)} for r in runner.section(P, "sweep")])


def figure(sw, seeds: list[int], limit: int | None):
    """Perplexity (log) and, when scored, zero-shot accuracy against the percentage of layers removed. Error
    bars: the standard deviation over seeds with several seeds, else the zero-shot binomial standard error."""
    import matplotlib.pyplot as plt

    cols = ["ppl_wiki"] + (["zs_avg", "zs_se"] if "zs_avg" in sw else [])
    agg = sw.groupby(["method", "ratio"])[cols].agg(["mean", "std"]).reset_index()
    panels = [("ppl_wiki", "perplexity, wiki (log scale)")] + ([("zs_avg", "zero-shot accuracy (average)")]
                                                               if "zs_avg" in sw else [])
    fig, axes = plt.subplots(1, len(panels), figsize=figsize(0.45), squeeze=False, layout="constrained")
    dense = agg[agg["method"] == "dense"]
    for ax, (metric, label) in zip(axes[0], panels):
        for m, g in agg[agg["method"] != "dense"].groupby("method"):
            err = g[(metric, "std")] if len(seeds) > 1 else g[("zs_se", "mean")] if metric == "zs_avg" else None
            ax.errorbar(g["ratio"] * 100, g[(metric, "mean")], yerr=None if err is None else err.fillna(0),
                        marker="o", capsize=3, ls="--" if "+ft" in m else "-", label=method_name(m))
        reference_line(ax, dense[(metric, "mean")].iloc[0], "dense", kind="dense")
        if metric == "zs_avg":
            chance_line(ax, limit=limit)
        ax.set_xlabel("layers removed (%)")
        ax.set_ylabel(label)
    plain_log_axis(axes[0][0], "y")
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="outside lower center", ncol=4)
    return fig


def table(sw):
    """Wiki perplexity per fraction removed (a column, not an index), TRSP first, and each other method's
    perplexity over TRSP's (below 1: lower than TRSP)."""
    ppl = sw[sw["method"] != "dense"].pivot_table(index="ratio", columns="method", values="ppl_wiki", aggfunc="mean")
    order = ["trsp"] + [m for m in ppl.columns if m != "trsp"] if "trsp" in ppl else list(ppl.columns)
    out = ppl[order].rename(columns=method_name)
    if "trsp" in ppl:
        for m in order[1:]:
            out[f"{method_name(m)} / TRSP"] = ppl[m] / ppl["trsp"]
    out.insert(0, "layers removed", [f"{r:.1%}".replace(".0%", "%") for r in out.index])
    return out.reset_index(drop=True)


def counts(sw) -> dict:
    """How many sweep ratios there are, and at how many each other method's perplexity is below TRSP's:
    `sweep_sel_lower` for the selection alone, `sweep_ft_lower` for it + fine-tune."""
    ppl = sw[sw["method"] != "dense"].pivot_table(index="ratio", columns="method", values="ppl_wiki", aggfunc="mean")
    out = {"sweep_n": len(ppl), "sweep_sel_lower": 0, "sweep_ft_lower": 0, "sweep_sel": "n/a", "sweep_ft": "n/a"}
    for m in [m for m in ppl.columns if m != "trsp"] if "trsp" in ppl else []:
        key = "ft" if "+ft" in m else "sel"
        out |= {f"sweep_{key}": method_name(m), f"sweep_{key}_lower": int((ppl[m] < ppl["trsp"]).sum())}
    return out

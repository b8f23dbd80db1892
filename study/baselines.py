"""TRSP against the layer-selection baselines under one protocol (the baselines chapter): the values its
prose quotes, its figures and its tables. Sentences are written in the chapter; this returns numbers.

    c = baselines.comparison(P)            # {"rows": {model: records}, "tables": {model: compare table}}
    glue(**baselines.values(c, P), fig_ladder=baselines.ladder(c))
"""
from __future__ import annotations

import inspect
import math

from . import plan, runner, stats
from .style import TASK_NAMES, fmt, method_name, model_name, plain_log_axis, reference_line

#: Perplexities beyond this are drawn at the figure's right edge, their value written beside them.
CAP = 5000
NAN = float("nan")


def comparison(P) -> dict:
    """The comparison section's rows and tables, per model (the first model first)."""
    rows = [r for r in runner.section(P, "comparison") if "method" in r]
    sets = {m: [r for r in rows if r["model"] == m] for m in (P.model, P.second_model) if m}
    sets = {m: rs for m, rs in sets.items() if rs}
    return {"rows": sets, "tables": {m: runner.table(rs) for m, rs in sets.items()}}


def _best(d, plus_ft: bool) -> tuple[str, float, float, float]:
    """(label, wiki perplexity, zero-shot avg, its s.e.) of the lowest-perplexity baseline (selection only or + ft)."""
    g = d[d.index.str.contains("+ft", regex=False) == plus_ft].drop(index=["dense", "trsp"], errors="ignore")
    if not len(g):
        return "n/a", NAN, NAN, NAN
    b = g["ppl_wiki"].idxmin()
    return b, g.loc[b, "ppl_wiki"], g.loc[b].get("zs_avg", NAN), g.loc[b].get("zs_se", NAN)


def outcome(t) -> dict:
    """One model's numbers: TRSP, dense, the best baseline without and with the equal-budget fine-tune, TRSP's
    rank by perplexity, and each zero-shot gap with its standard error and verdict (`stats.verdict`)."""
    d = t.set_index("method")
    tr, dense = d.loc["trsp"], d.loc["dense"]
    out = {"trsp_ppl": tr["ppl_wiki"], "trsp_news": tr["ppl_news"], "dense_ppl": dense["ppl_wiki"],
           "dense_zs": dense.get("zs_avg", NAN),
           "rank": int((d.drop(index="dense")["ppl_wiki"] < tr["ppl_wiki"]).sum()) + 1,
           "n_pruned": len(d) - 1, "n_removed": int(tr["n_removed"])}
    for key, plus_ft in (("sel", False), ("ft", True)):
        name, ppl, zs, se = _best(d, plus_ft)
        gap, se_gap = tr.get("zs_avg", NAN) - zs, stats.diff_se(tr.get("zs_se", NAN), se)
        out |= {f"best_{key}": method_name(name), f"best_{key}_ppl": ppl,
                f"{key}_verdict": "n/a" if ppl != ppl else "lower" if tr["ppl_wiki"] < ppl else "higher",
                f"zs_gap_{key}": gap, f"zs_se_{key}": se_gap,
                f"zs_verdict_{key}": "n/a" if gap != gap else stats.verdict(gap, se_gap, "TRSP ahead", "TRSP behind")}
    return out


def values(c: dict, P) -> dict:
    """Every value the chapter glues: the first model's unprefixed, the second's as `second_*` (NaN and "n/a"
    when there is none), the answer word, the zero-shot ties, the item counts and the identical rows."""
    from trsp_lib.profiles import load

    models = list(c["tables"])
    per = [outcome(c["tables"][m]) for m in models]
    out = {"model": model_name(models[0]), "second_model": model_name(models[1] if len(models) > 1 else None), **per[0],
           **{f"second_{k}": v for k, v in (per[1] if len(per) > 1 else _missing(per[0])).items()}}
    verdicts = [o[f"{k}_verdict"] for o in per for k in ("sel", "ft")]
    out["answer"] = "No" if all(v == "higher" for v in verdicts) else "Yes" if all(
        v == "lower" for v in verdicts) else "Not everywhere"
    zs = [o[f"zs_verdict_{k}"] for o in per for k in ("sel", "ft")]
    out |= {"n_zs": len(zs), "n_ties": sum(v == "tie" for v in zs), "limit": P.limit, "main_limit": P.main_limit,
            "ratio_pct": 100 * P.ratio, "n_layers": c["rows"][models[0]][0]["n_layers"]}
    eval_tokens = load(P.profile)[1].eval_max_tokens
    out["eval_tokens"] = f"{eval_tokens:,} held-out tokens" if eval_tokens else "the whole test split"
    dense = runner.read(plan.main_rows(P, P.seeds[0])[0], P, compute=False) or {}  # the verdict's dense row
    out["dense_zs_main"] = dense.get("zs_avg", NAN)
    pairs = identical(c["rows"][models[0]])
    out["identical"] = "; ".join(f"{method_name(a['method'])} and {method_name(b['method'])}"
                                 for a, b in pairs) or "none"
    return out | collapse(c["tables"][models[0]], c["rows"][models[0]])


def _missing(like: dict) -> dict:
    return {k: "n/a" if isinstance(v, str) else NAN for k, v in like.items()}


def identical(rows: list[dict]) -> list[tuple[dict, dict]]:
    """Pairs of selection-only rows that remove the same set of layers, in another order: the same model."""
    sel = [r for r in rows if r["method"] not in ("dense", "trsp") and "+ft" not in r["method"]]
    return [(a, b) for i, a in enumerate(sel) for b in sel[i + 1:] if set(a["removed"]) == set(b["removed"])]


def collapse(t, rows: list[dict]) -> dict:
    """LaCo's and reverse order's numbers (perplexities as `fmt` bounds, the layers they removed) and LaCo's
    acceptance threshold, for the paragraph that explains their collapse."""
    from trsp_lib.baselines import criteria

    d, by = t.set_index("method"), {r["method"]: r for r in rows}
    out = {"laco_threshold": inspect.signature(criteria.laco).parameters["threshold"].default}
    for m in ("laco", "reverse", "random"):
        ft = next((k for k in d.index if k.startswith(m + "+ft")), None)
        out |= {f"{m}_ppl": fmt(d["ppl_wiki"].get(m, NAN)), f"{m}_ft_ppl": fmt(d["ppl_wiki"].get(ft, NAN)),
                f"{m}_layers": ", ".join(map(str, sorted(by[m]["removed"]))) if m in by else "n/a"}
    return out


def ladder(c: dict):
    """Per model, one line per selection: its perplexity alone (open) and after the equal-budget fine-tune
    (filled), an arrow between; TRSP (red, open: it trains by itself). Beyond `CAP`: at the edge, value written."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from .style import figsize

    heights = [sum(m != "dense" and "+ft" not in m for m in t["method"]) for t in c["tables"].values()]
    fig, axes = plt.subplots(len(heights), 1, figsize=figsize(0.055 * sum(heights) + 0.12 * len(heights)),
                             gridspec_kw={"height_ratios": heights}, squeeze=False, layout="constrained")
    for ax, (name, t) in zip(axes[:, 0], c["tables"].items()):
        _panel(ax, t.set_index("method")["ppl_wiki"])
        n_layers = c["rows"][name][0]["n_layers"]
        ax.set_title(f"{model_name(name)}: {t['n_removed'].max()} of {n_layers} layers removed", loc="left")
    axes[-1, 0].set_xlabel("perplexity on held-out Wikipedia (log scale, lower is better)")
    handles = [Line2D([], [], ls="", marker="o", mfc="white", mec="tab:blue", label="selection only"),
               Line2D([], [], ls="", marker="o", mfc="tab:blue", mec="tab:blue", label="+ equal-budget fine-tune"),
               Line2D([], [], ls="", marker="o", mfc="white", mec="tab:red", label="TRSP (trains by itself)")]
    fig.legend(handles=handles, loc="outside lower center", ncol=3)
    return fig


def _panel(ax, d) -> None:
    bases = [m for m in d.index if m != "dense" and "+ft" not in m]
    fine = {m: next((k for k in d.index if k.startswith(m + "+ft")), None) for m in bases}
    bases.sort(key=lambda m: min(d[m], d.get(fine[m], math.inf)), reverse=True)
    for y, m in enumerate(bases):
        colour = "tab:red" if m == "trsp" else "tab:blue"
        points = [(d[m], "white")] + ([(d[fine[m]], colour)] if fine[m] else [])
        if len(points) == 2:
            ax.annotate("", xy=(min(points[1][0], CAP), y), xytext=(min(points[0][0], CAP), y),
                        arrowprops={"arrowstyle": "->", "color": "0.5", "shrinkA": 5, "shrinkB": 5})
        for value, face in points:
            ax.scatter(min(value, CAP), y, s=40, facecolor=face, edgecolor=colour, zorder=3)
        beyond = [("+ fine-tune " if k else "alone ") + fmt(v) for k, (v, _) in enumerate(points) if v > CAP]
        if beyond:
            ax.annotate("off scale: " + ", ".join(beyond), (CAP, y), xytext=(-8, 7), textcoords="offset points",
                        ha="right", va="bottom", fontsize=9)
    ax.set_yticks(range(len(bases)), [method_name(m) for m in bases])
    ax.set_ylim(-0.6, len(bases) - 0.4)
    reference_line(ax, d["dense"], f"dense {d['dense']:.1f}", kind="dense", vertical=True)
    plain_log_axis(ax, "x")
    ax.set_xlim(d["dense"] * 0.85, CAP * 1.3)
    ax.set_xticks([v for v in (20, 50, 100, 200, 500, 1000, 2000, 5000) if v > d["dense"] * 0.85])


def main_table(t):
    """The comparison as the chapter shows it: method, layers removed, perplexities, zero-shot, CPU minutes."""
    cols = [c for c in ("method", "n_removed", "ppl_wiki", "ppl_news", "zs_avg", "zs_se", "prune_s") if c in t]
    out = t[cols].copy()
    if "prune_s" in out:
        out["prune_s"] = out["prune_s"] / 60
    return out


def per_task(t, rows: list[dict]):
    """Zero-shot accuracy per task, each under the metric the average uses (named in the column)."""
    import pandas as pd

    metric = rows[0].get("zs_average_metric") or {}
    return pd.DataFrame({"method": t["method"], **{f"{TASK_NAMES.get(k, k)} ({m})": t[f"zs_{k}_{m}"]
                                                   for k, m in metric.items() if f"zs_{k}_{m}" in t}})


def against_best(c: dict):
    """TRSP against the best baseline without and with the fine-tune, per model: perplexities, zero-shot gap."""
    import pandas as pd

    rows = []
    for name, t in c["tables"].items():
        o = outcome(t)
        for key, what in (("sel", "selection only"), ("ft", "+ equal-budget fine-tune")):
            rows.append({"model": model_name(name), "best baseline": f"{o[f'best_{key}']} ({what})",
                         "TRSP PPL wiki": o["trsp_ppl"], "its PPL wiki": o[f"best_{key}_ppl"],
                         "zero-shot TRSP − it": o[f"zs_gap_{key}"],
                         "s.e.": o[f"zs_se_{key}"], "zero-shot verdict": o[f"zs_verdict_{key}"]})
    return pd.DataFrame(rows)


def paper_scale() -> dict:
    """The rerun note's paper-scale block (`chapter.rerun_note(paper=...)`): LLaMA-2-7B, every method, no sweep."""
    from trsp_lib.method.config import budget
    from trsp_lib.profiles import load

    from .scaling import LLAMA2_CONFIGS, n_params

    big, (cfg, _) = "meta-llama/Llama-2-7b-hf", load("paper-scale")
    n_methods, tokens = 8, budget(cfg, 8).tokens  # the `all` baselines, each + fine-tune of TRSP's budget, and TRSP
    rows = 2 * n_methods + 2
    params = {"model": big, "calib": "wikitext2-train", "eval_texts": {"wiki": "wikitext2", "news": "news"},
              "study": {"profile": "paper-scale", "device": "cuda", "limit": None, "criterion_samples": 128,
                        "second_model": None}}
    from .chapter import rerun_command
    return {"command": rerun_command("04_baselines", params, env="HF_HUB_OFFLINE=0"),
            "n_params": n_params(LLAMA2_CONFIGS[big])["total"], "train_tokens": (n_methods + 1) * tokens,
            "forward_tokens": rows * (340_000 + 6_000_000), "what": "LLaMA-2-7B, every method, without the sweep",
            "note": f"trained: TRSP and {n_methods} + fine-tune rows of {tokens:,} tokens each (8 of 32 layers, 16 "
                    f"steps per round, 128 stage-2 steps, 8 x 2048 tokens a step); forward only: {rows} rows x (about "
                    "340k WikiText-2 test tokens + about 6M tokens of the five full zero-shot sets); the selection "
                    "criteria's own passes are small beside these, SLEB's repeated scoring excepted"}

"""The evidence behind the verdict: the claims the main rows decide (the rows: `plan.main_rows`, over three
calibration seeds with 500 zero-shot items each, built on the choices the declared searches made on validation
text), their table and the headline figure.
"""
from __future__ import annotations

import math

from .stats import beyond_spread, paired_bootstrap, seed_spread

LIMIT = 500  # the default zero-shot items per task of the main rows (`plan.Params.main_limit`)


#: The claims the main rows decide: (name of A, its study label, name of B, its label). The paper makes the
#: first two (with LoRA-retrained baselines); the equal-budget controls and the 2026 pipeline are ours.
CLAIMS = [("TRSP", "trsp", "ShortGPT", "shortgpt"), ("TRSP", "trsp", "SLEB", "sleb"),
          ("TRSP tuned", "trsp (tuned)", "SLEB", "sleb"),
          ("TRSP", "trsp", "ShortGPT + fine-tune", "shortgpt+ft"), ("TRSP", "trsp", "SLEB + fine-tune", "sleb+ft"),
          ("TRSP tuned", "trsp (tuned)", "SLEB + fine-tune", "sleb+ft"),
          ("SLEB + lin + KD", "sleb+lin+kd", "TRSP tuned", "trsp (tuned)")]


def _pm(values: list[float], digits: int = 2) -> str:
    if not values:
        return "-"
    s = seed_spread(values)
    return f"{s['mean']:.{digits}f} ± {s['sd']:.{digits}f}" if s["n"] > 1 else f"{s['mean']:.{digits}f}"


def seeds_table(main: dict[str, list[dict]]):
    """One line per study row: perplexities and zero-shot average as mean ± sd over its seeds."""
    import pandas as pd

    return pd.DataFrame([{"method": label, "seeds": len(rows), "PPL wiki": _pm([r["ppl_wiki"] for r in rows]),
                          "PPL news": _pm([r["ppl_news"] for r in rows]),
                          "zero-shot avg": _pm([r["zs_avg"] for r in rows if "zs_avg" in r], 3)}
                         for label, rows in main.items()])


def _says(z: dict, a_name: str, b_name: str) -> str:
    """The zero-shot verdict of a bootstrap result: a tie when its interval holds 0, else the side ahead."""
    return "tie (interval holds 0)" if z["lo"] <= 0 <= z["hi"] else f"{a_name if z['lo'] > 0 else b_name} higher"


def _ci(z: dict) -> str:
    return f"{z['diff']:+.3f} [{z['lo']:+.3f}, {z['hi']:+.3f}]"


def claim_rows(main: dict[str, list[dict]], claims: list[tuple[str, str, str, str]] = CLAIMS) -> list[dict]:
    """Each claim "A beats B", decided twice: perplexity by the seed rule (`beyond_spread`), zero-shot by the
    paired bootstrap over the same items that resamples seeds, then items (beside it the earlier items-only
    interval, so a reader sees which verdicts the seed variance changes). Claims with a missing side are left out.
    Each dict also carries the labels ("a", "b") and the bootstrap result ("zs", with per-task intervals)."""
    out = []
    for a_name, a, b_name, b in claims:
        if a not in main or b not in main:
            continue
        pa, pb = [r["ppl_wiki"] for r in main[a]], [r["ppl_wiki"] for r in main[b]]
        ppl = ("within seed spread" if not beyond_spread(pa, pb) else f"{a_name} lower" if max(pa) < min(pb)
               else f"{b_name} lower")
        items = all(any("zs_items" in r for r in main[x]) for x in (a, b))
        none = {"diff": math.nan, "lo": math.nan, "hi": math.nan, "tasks": {}}
        zs = paired_bootstrap(main[a], main[b]) if items else none
        flat = paired_bootstrap(main[a], main[b], seeds=False) if items else none  # the earlier, items-only interval
        zv = _says(zs, a_name, b_name) if items else "not measured"
        out.append({"a": a, "b": b, "zs": zs, "claim": f"{a_name} beats {b_name}",
                    "PPL wiki (A vs B)": f"{_pm(pa, 1)} vs {_pm(pb, 1)}", "PPL verdict": ppl,
                    "zero-shot A - B [95% CI]": _ci(zs) if items else "-", "zero-shot verdict": zv,
                    "items only [95% CI]": _ci(flat) if items else "-",
                    "items-only verdict": _says(flat, a_name, b_name) if items else "not measured",
                    "holds": "yes" if ppl.startswith(a_name) and not zv.endswith(f"{b_name} higher")
                    else "no" if ppl.startswith(b_name) or zv.startswith(b_name) else "undecided"})
    return out


#: The study labels in the order the figures and tables list them (their names: `style.method_name`).
ORDER = ("dense", "trsp", "trsp (tuned)", "shortgpt", "sleb", "shortgpt+ft", "sleb+ft", "sleb+lin", "sleb+lin+kd")


OTHERS = ("C0", "C1", "C2", "C4", "C5", "C6", "C8", "C9")  # matplotlib's cycle without its red (C3) and grey (C7)


def plot_seeds(main: dict[str, list[dict]], limit: int = LIMIT):
    """The headline figure: per study row, one dot per calibration seed; wiki test perplexity (log) and the
    zero-shot average, with the dense model and the chance level. Returns the figure."""
    import matplotlib.pyplot as plt

    from .style import chance_line, figsize, method_name, plain_log_axis, reference_line, selection

    order = [k for k in ORDER if k in main and k != "dense"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=figsize(0.45), sharey=True)
    for i, label in enumerate(order):
        colour = "tab:red" if selection(label) == "trsp" else OTHERS[i % len(OTHERS)]  # TRSP alone in red
        ax1.scatter([r["ppl_wiki"] for r in main[label]], [i] * len(main[label]), color=colour, zorder=3)
        scored = [r["zs_avg"] for r in main[label] if "zs_avg" in r]  # perplexity-only seeds have no dot here
        ax2.scatter(scored, [i] * len(scored), color=colour, zorder=3)
    reference_line(ax1, main["dense"][0]["ppl_wiki"], "dense", kind="dense", vertical=True)
    reference_line(ax2, main["dense"][0]["zs_avg"], "dense", kind="dense", vertical=True)
    chance_line(ax2, limit=limit, vertical=True)
    plain_log_axis(ax1)
    ax1.set_yticks(range(len(order)), [method_name(k) for k in order])
    ax1.invert_yaxis()
    ax1.set_xlabel("wiki test perplexity (log scale; lower is better)")
    ax2.set_xlabel(f"zero-shot average ({limit} items per task)")
    fig.suptitle("One dot per calibration seed")
    return fig

"""The evidence behind the verdict: the claims the main rows decide (the rows: `plan.main_rows`, over three
calibration seeds with 500 zero-shot items each, built on the choices the declared searches made on validation
text), the values a chapter glues into its prose, their tables and the two figures.

Values, tables and figures only: the sentences that state them are written in the chapters' markdown.
"""
from __future__ import annotations

import math
import re

from .stats import beyond_spread, paired_bootstrap, seed_spread

LIMIT = 500  # the default zero-shot items per task of the main rows (`plan.Params.main_limit`)

#: The claims the main rows decide: (name of A, its study label, name of B, its label). The paper makes the
#: first two (with LoRA-retrained baselines); the equal-budget controls and the 2026 pipeline are ours.
CLAIMS = [("TRSP", "trsp", "ShortGPT", "shortgpt"), ("TRSP", "trsp", "SLEB", "sleb"),
          ("TRSP tuned", "trsp (tuned)", "SLEB", "sleb"),
          ("TRSP", "trsp", "ShortGPT + fine-tune", "shortgpt+ft"), ("TRSP", "trsp", "SLEB + fine-tune", "sleb+ft"),
          ("TRSP tuned", "trsp (tuned)", "SLEB + fine-tune", "sleb+ft"),
          ("SLEB + lin + KD", "sleb+lin+kd", "TRSP tuned", "trsp (tuned)")]

#: The claims the paper makes (the others are this study's controls).
PAPER_CLAIMS = (("trsp", "shortgpt"), ("trsp", "sleb"))
#: A claim's verdict as a reader's word: in a table ("holds") and as the verb of "A ... B" in a sentence.
VERDICT = {"yes": "holds", "no": "does not hold", "undecided": "cannot tell"}
VERB = {"yes": "beats", "no": "does not beat", "undecided": "cannot be told apart from"}

#: The study labels in the order the figures and tables list them (their names: `style.method_name`).
ORDER = ("dense", "trsp", "trsp (tuned)", "shortgpt", "sleb", "shortgpt+ft", "sleb+ft", "sleb+lin", "sleb+lin+kd")
OTHERS = ("C0", "C1", "C2", "C4", "C5", "C6", "C8", "C9")  # matplotlib's cycle without its red (C3) and grey (C7)


def key(label: str) -> str:
    """A study label as part of a glue name: 'trsp (tuned)' -> 'trsp_tuned', 'sleb+ft (lr 2e-5)' -> 'sleb_ft'."""
    base = label if label == "trsp (tuned)" else label.partition(" (")[0]
    return re.sub(r"[^a-z0-9]+", "_", base.lower()).strip("_")


def _side(a: list[float], b: list[float]) -> str:
    """Which side the seed rule puts lower: "A", "B", or "neither" (the seed ranges overlap)."""
    return "neither" if not beyond_spread(a, b) else "A" if max(a) < min(b) else "B"


def _higher(z: dict) -> str:
    """Which side a zero-shot interval puts higher: "neither" when it holds 0 (or was not measured)."""
    return "neither" if not z["lo"] > 0 and not z["hi"] < 0 else "A" if z["lo"] > 0 else "B"


def claim_rows(main: dict[str, list[dict]], claims: list[tuple[str, str, str, str]] = CLAIMS) -> list[dict]:
    """Each claim "A beats B", decided twice: perplexity by the seed rule (`beyond_spread`): "ppl" is the side
    lower, "A", "B" or "neither"; zero-shot by the paired bootstrap over the same items that resamples seeds, then
    items ("zs", with per-task intervals; "zs_higher" the side it puts higher), beside it the earlier items-only
    interval ("flat", "flat_higher"). "holds" is "yes" when A is lower by the seed rule and not lower on zero-shot,
    "no" when B wins either test, else "undecided". Claims with a missing side are left out."""
    none = {"diff": math.nan, "lo": math.nan, "hi": math.nan, "tasks": {}}
    out = []
    for a_name, a, b_name, b in claims:
        if a not in main or b not in main:
            continue
        pa, pb = [r["ppl_wiki"] for r in main[a]], [r["ppl_wiki"] for r in main[b]]
        items = all(any("zs_items" in r for r in main[x]) for x in (a, b))
        zs = paired_bootstrap(main[a], main[b]) if items else none
        flat = paired_bootstrap(main[a], main[b], seeds=False) if items else none
        c = {"a": a, "b": b, "a_name": a_name, "b_name": b_name, "claim": f"{a_name} beats {b_name}",
             "ppl_a": seed_spread(pa), "ppl_b": seed_spread(pb), "ppl": _side(pa, pb), "zs": zs, "flat": flat,
             "zs_higher": _higher(zs), "flat_higher": _higher(flat)}
        c["holds"] = ("yes" if c["ppl"] == "A" and c["zs_higher"] != "B"
                      else "no" if "B" in (c["ppl"], c["zs_higher"]) else "undecided")
        out.append(c)
    return out


def _pm(s: dict) -> str:
    """'110 ± 44', '0.406 ± 0.006': the mean at three significant digits, the sd at the mean's decimals."""
    from .style import fmt

    mean = fmt(s["mean"])
    places = len(mean.partition(".")[2])
    return f"{mean} ± {s['sd']:,.{places}f}" if s["n"] > 1 else mean


def _interval(z: dict) -> str:
    return "-" if z["diff"] != z["diff"] else f"{z['diff']:+.3f} [{z['lo']:+.3f}, {z['hi']:+.3f}]"


def claims_table(claims: list[dict], paper: dict[str, str] | None = None, detail: bool = False):
    """The claims as a DataFrame a reader can scan: both tests, the seed rule's winner by name, the verdict in
    words. `paper`: claim -> what the paper reports for it (a column when given); `detail`: also the items-only
    interval."""
    import pandas as pd

    def name(c: dict, side: str) -> str:
        return {"A": c["a_name"], "B": c["b_name"]}.get(side, "neither")

    rows = [{"claim": c["claim"], **({"paper (LLaMA-2-7B)": paper.get(c["claim"], "-")} if paper else {}),
             "wiki perplexity, A vs B": f"{_pm(c['ppl_a'])} vs {_pm(c['ppl_b'])}",
             "lower by the seed rule": name(c, c["ppl"]),
             "zero-shot A − B [95% interval]": _interval(c["zs"]),
             **({"items only": _interval(c["flat"])} if detail else {}), "verdict": VERDICT[c["holds"]]}
            for c in claims]
    return pd.DataFrame(rows)


def seeds_table(main: dict[str, list[dict]]):
    """One line per study row: perplexities and zero-shot average as mean ± sd over its seeds."""
    import pandas as pd

    def pm(rows: list[dict], col: str) -> str:
        values = [r[col] for r in rows if col in r]
        return _pm(seed_spread(values)) if values else "-"

    return pd.DataFrame([{"method": label, "seeds": len(main[label]), "PPL wiki": pm(main[label], "ppl_wiki"),
                          "PPL news": pm(main[label], "ppl_news"), "zero-shot avg": pm(main[label], "zs_avg")}
                         for label in ORDER if label in main])


def row_values(main: dict[str, list[dict]], suffix: str = "main") -> dict:
    """Glue values of every study row: `<key>_ppl_<suffix>` (mean over seeds), `_ppl_min`, `_ppl_max`,
    `_ppl_sd` and `<key>_zs_<suffix>`; NaN for a label without rows, so a page states "nan", never crashes."""
    out = {}
    for label in ORDER:
        rows = main.get(label, [])
        ppl = seed_spread([r["ppl_wiki"] for r in rows]) if rows else {}
        zs = [r["zs_avg"] for r in rows if "zs_avg" in r]
        k = key(label)
        out.update({f"{k}_ppl_{suffix}": ppl.get("mean", math.nan), f"{k}_ppl_min": ppl.get("min", math.nan),
                    f"{k}_ppl_max": ppl.get("max", math.nan), f"{k}_ppl_sd": ppl.get("sd", math.nan),
                    f"{k}_zs_{suffix}": sum(zs) / len(zs) if zs else math.nan})
    out["n_seeds"] = max((len(v) for v in main.values()), default=0)
    return out


def _answer(holds: list[bool]) -> str:
    return "Yes" if holds and all(holds) else "Partly" if any(holds) else "No"


def claim_values(claims: list[dict]) -> dict:
    """Glue values of the claims: `verdict_<a>_vs_<b>` (a verb: "beats", "does not beat", ...), the counts
    (n_claims, n_hold, n_fail, n_open, n_zs_ties, n_changed: zero-shot verdicts the seed resampling changed) and
    `answer` to "does TRSP beat the simpler pruners?" ("No" when no claim with TRSP as A holds, "Yes" when all do,
    else "Partly") and `answer_paper`, the same over the paper's own claims (`PAPER_CLAIMS`)."""
    out = {f"verdict_{key(a)}_vs_{key(b)}": "n/a" for _, a, _, b in CLAIMS}
    out.update({f"verdict_{key(c['a'])}_vs_{key(c['b'])}": VERB[c["holds"]] for c in claims})
    holds = [c["holds"] for c in claims]
    trsp = [c["holds"] == "yes" for c in claims if c["a"].startswith("trsp")]
    out.update(n_claims=len(claims), n_hold=holds.count("yes"), n_fail=holds.count("no"),
               n_open=holds.count("undecided"), n_zs_ties=sum(c["zs_higher"] == "neither" for c in claims),
               n_changed=sum(c["zs_higher"] != c["flat_higher"] for c in claims),
               answer=_answer(trsp), answer_paper=_answer([c["holds"] == "yes" for c in claims
                                                           if (c["a"], c["b"]) in PAPER_CLAIMS]))
    return out


def table_values(t, suffix: str) -> dict:
    """Glue values of a one-seed `runner.table` (indexed by method; None: no rows): `<key>_ppl_<suffix>`,
    `<key>_zs_<suffix>` and its standard error `<key>_zs_se_<suffix>`;
    NaN for the usual rows it lacks (a model that was not run)."""
    out = {f"{key(m)}_{c}_{suffix}": math.nan for m in ORDER for c in ("ppl", "zs", "zs_se")}
    for method, r in ([] if t is None else t.iterrows()):
        for c, col in (("ppl", "ppl_wiki"), ("zs", "zs_avg"), ("zs_se", "zs_se")):
            out[f"{key(method)}_{c}_{suffix}"] = float(r.get(col, math.nan))
    return out


def plot_seeds(main: dict[str, list[dict]], limit: int = LIMIT):
    """The headline figure: per study row, one dot per calibration seed; wiki test perplexity (log) and the
    zero-shot average, with the dense model and the chance level. Returns the figure."""
    import matplotlib.pyplot as plt

    from .style import chance_line, figsize, method_name, plain_log_axis, reference_line, selection

    order = [k for k in ORDER if k in main and k != "dense"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=figsize(0.36), sharey=True, layout="constrained")
    for i, label in enumerate(order):
        colour = "tab:red" if selection(label) == "trsp" else OTHERS[i % len(OTHERS)]  # TRSP alone in red
        ax1.scatter([r["ppl_wiki"] for r in main[label]], [i] * len(main[label]), color=colour, zorder=3)
        scored = [r["zs_avg"] for r in main[label] if "zs_avg" in r]  # perplexity-only seeds have no dot here
        ax2.scatter(scored, [i] * len(scored), color=colour, zorder=3)
    if "dense" in main:
        reference_line(ax1, main["dense"][0]["ppl_wiki"], "dense", kind="dense", vertical=True)
        reference_line(ax2, main["dense"][0]["zs_avg"], "dense", kind="dense", vertical=True)
    chance_line(ax2, limit=limit, vertical=True)
    plain_log_axis(ax1)
    ax1.set_yticks(range(len(order)), [method_name(k) for k in order])
    ax1.invert_yaxis()
    ax1.set_xlabel("wiki perplexity, log scale\n(lower is better)")
    ax2.set_xlabel("zero-shot accuracy\n(higher is better)")
    return fig


def plot_claims(claims: list[dict]):
    """The claims figure: per claim, left the wiki perplexity of A's seeds (red) and B's (grey), log scale (the
    seed rule reads whether they overlap); right the zero-shot A − B with its 95% interval over seeds and items
    (black) and the items-only one (grey). Returns the figure."""
    import matplotlib.pyplot as plt

    from .style import figsize, plain_log_axis, reference_line

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=figsize(0.08 * len(claims) + 0.2), sharey=True,
                                   layout="constrained")
    for i, c in enumerate(claims):
        for side, dy, colour in (("a", -0.15, "tab:red"), ("b", 0.15, "0.45")):
            values = [c[f"ppl_{side}"]["min"], c[f"ppl_{side}"]["max"]]
            ax1.plot(values, [i + dy] * 2, color=colour, lw=3, alpha=0.5, solid_capstyle="round")
            ax1.scatter([c[f"ppl_{side}"]["mean"]], [i + dy], color=colour, zorder=3,
                        label=("A" if side == "a" else "B") + ": seed range, mean" if i == 0 else None)
        for z, dy, colour, what in ((c["zs"], -0.12, "k", "seeds and items"), (c["flat"], 0.12, "0.55", "items only")):
            if z["diff"] == z["diff"]:
                ax2.errorbar(z["diff"], i + dy, xerr=[[z["diff"] - z["lo"]], [z["hi"] - z["diff"]]], fmt="o",
                             color=colour, capsize=3, zorder=3, label=f"95% interval, {what}" if i == 0 else None)
    reference_line(ax2, 0.0, "no difference", vertical=True)
    plain_log_axis(ax1)
    ax1.set_yticks(range(len(claims)), [f"{c['a_name']}\nvs {c['b_name']}" for c in claims])
    ax1.invert_yaxis()
    ax1.set_xlabel("wiki perplexity (log)")
    ax2.set_xlabel("zero-shot accuracy, A − B")
    for ax in (ax1, ax2):
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1, frameon=False)
    return fig

"""This study against the paper's own numbers: pruned / dense ratios, and the claims read from one seed.
"""
from __future__ import annotations

import json

from trsp_lib.data import data_dir

from .stats import diff_se, verdict
from .style import method_name, selection


def relative(df, source: str):
    """Per model, each method's perplexity over the dense one and its accuracy drop in points.

    `df` has columns model, method, ppl, acc (percent) and one "dense" row per model."""
    import pandas as pd

    out = []
    for m, g in df.groupby("model", sort=False):
        d = g[g["method"] == "dense"].iloc[0]
        for _, r in g[g["method"] != "dense"].iterrows():
            out.append({"source": source, "model": m, "method": r["method"], "PPL pruned/dense": r["ppl"] / d["ppl"],
                        "accuracy drop (pp)": d["acc"] - r["acc"]})
    return pd.DataFrame(out)


def paper_numbers():
    """The paper's 25% table (data/paper/trsp_25pct.json, which names its source) as a DataFrame."""
    import pandas as pd

    record = json.loads((data_dir() / "paper" / "trsp_25pct.json").read_text())
    return pd.DataFrame(record["rows"], columns=["model", "method", "ppl", "acc"])


#: The paper's ablations: (claim, row label, TRSP config overrides that make the row, the factor by which
#: perplexity must rise for the claim to hold; None: any rise; the lambda2 claim is the method's premise,
#: so it asks for more than noise). The paper's table uses the same labels.
ABLATION_CLAIMS = (("stage 2 (R) matters: removing it raises perplexity", "trsp w/o R (no stage 2)",
                    {"stage2_steps": 0}, None),
                   ("iterative selection (W) matters: one-shot raises perplexity", "trsp w/o W (one-shot)",
                    {"one_shot": True}, None),
                   ("the identity penalty (lambda2) matters: without it perplexity rises > 5% (fade on)",
                    "trsp, lambda2 = 0 (stage 2 without its penalty)", {"lambda2": 0.0}, 1.05))


def rel(both, source: str, model: str, method: str, col: str = "PPL pruned/dense") -> float:
    """One value of a `relative` table (NaN when that row is absent)."""
    sel = both[(both["source"] == source) & (both["model"] == model) & (both["method"] == method)]
    return float(sel[col].iloc[0]) if len(sel) else float("nan")


def ours(comparison: list[dict], ablations: list[dict], claimed: dict[str, str]):
    """This study's side of the relative table: per row of the comparison section (one seed, both models) its
    model, method, wiki perplexity, zero-shot accuracy and standard error in percent; then the paper-ablation rows
    under the ablation claims' labels (`claimed`: row label -> claim label), perplexity only."""
    import pandas as pd

    from trsp_lib.zeroshot import zs_stderr

    out = [{"model": r["model"], "method": r["label"], "ppl": r["ppl_wiki"], "acc": 100 * r.get("zs_avg", float("nan")),
            "acc_se": 100 * zs_stderr(r)} for r in comparison if "method" in r]
    out += [{"model": r["model"], "method": claimed[r["label"]], "ppl": r["ppl_wiki"], "acc": float("nan")}
            for r in ablations]
    return pd.DataFrame(out)


def paper_claims(both, claims: list[dict], paper_model: str = "LLaMA2-7B") -> dict[str, str]:
    """claim -> what the paper reports for it (`paper_evidence`), for the paper column of `evidence.claims_table`."""
    return {c["claim"]: paper_evidence(both, c["a"], c["b"], paper_model) for c in claims}


def paper_evidence(both, a: str, b: str, paper_model: str = "LLaMA2-7B") -> str:
    """What the paper reports for "a beats b" as pruned / dense perplexity, or why there is nothing to quote."""
    trsp = selection(a) == "trsp"
    if trsp and b in ("shortgpt", "sleb"):
        return f"{rel(both, 'paper', paper_model, 'trsp'):.2f} vs {rel(both, 'paper', paper_model, b):.2f}"
    return "not measured" if trsp else "not in the paper"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def one_seed_claims(both, ours, model: str, paper_model: str = "LLaMA2-7B"):
    """The claims read from one seed with 50 items: TRSP against ShortGPT / SLEB (and their + fine-tune) on
    every other model of `ours`, and the paper's ablations on `model`. Perplexity decides; a zero-shot gap
    within two standard errors is a tie. `both`: `relative` of the paper and of `ours` ("this study")."""
    import pandas as pd

    out = []
    for m in [x for x in ours["model"].unique() if x != model]:
        t = rel(both, "this study", m, "trsp")
        labels = list(ours.loc[ours["model"] == m, "method"])
        for base in ("shortgpt", "sleb"):
            for label in [base] + [x for x in labels if x.startswith(base + "+ft")]:
                name, b = method_name(label), rel(both, "this study", m, label)
                if b == b:
                    out.append({"claim": f"TRSP has lower perplexity than {name}", "model": m,
                                "this study": f"{t:.2f} vs {b:.2f}", "holds here": _yes(t < b)})
        ta, sa = (rel(both, "this study", m, x, "accuracy drop (pp)") for x in ("trsp", "shortgpt"))
        se = diff_se(*ours.loc[(ours["model"] == m) & ours["method"].isin(["trsp", "shortgpt"]), "acc_se"])
        out.append({"claim": "TRSP loses less zero-shot accuracy than ShortGPT", "model": m,
                    "this study": f"{ta:.1f} vs {sa:.1f} pp (s.e. {se:.1f})",
                    "holds here": verdict(sa - ta, se, "yes", "no", tie="tie (within 2 s.e.)")})
    full = rel(both, "this study", model, "trsp")
    for claim, label, _, premise in ABLATION_CLAIMS:
        other = rel(both, "this study", model, label)
        paper = (f"{rel(both, 'paper', paper_model, 'trsp'):.2f} -> {rel(both, 'paper', paper_model, label):.2f}"
                 if premise is None else "the method's premise")
        out.append({"claim": claim, "model": model, "paper (LLaMA-2-7B)": paper,
                    "this study": f"{full:.2f} -> {other:.2f}",
                    "holds here": _yes(other > (premise or 1.0) * full) if other == other else "not computed"})
    return pd.DataFrame(out, columns=["claim", "model", "paper (LLaMA-2-7B)", "this study", "holds here"]).fillna("")

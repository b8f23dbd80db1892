"""The study's statistics, in one place: standard errors, the tie rule, relative figures, the
paper's own numbers, and the speed-by-ratio runs of the speed chapter.

Notebooks call these rather than re-deriving them, so a rule (what counts as a tie) is written once.
"""
from __future__ import annotations

import copy
import json
import math

from .data import data_dir

#: Two zero-shot averages closer than this many standard errors of their difference are a tie.
TIE_SE = 2.0


def zs_stderr(row: dict) -> float:
    """Standard error of a row's zero-shot average from its item counts (binomial, tasks independent).

    With 50 items per task and 5 tasks it is about 0.03: two averages closer than ~2 standard errors
    of their difference (about 0.06 there) are a tie, whatever the table's third decimal says."""
    metric, counts = row.get("zs_average_metric"), row.get("zs_n")
    if not metric or not counts:
        return float("nan")
    var = sum(p * (1 - p) / counts[t] for t, m in metric.items() for p in [row[f"zs_{t}_{m}"]])
    return var ** 0.5 / len(metric)


def diff_se(*ses: float) -> float:
    """Standard error of a difference of independent estimates."""
    return math.sqrt(sum(s * s for s in ses))


def is_tie(gap: float, se: float) -> bool:
    """The study's tie rule: |gap| < TIE_SE standard errors."""
    return abs(gap) < TIE_SE * se


def verdict(gap: float, se: float, positive: str, negative: str, tie: str = "tie") -> str:
    """`tie` within the tie rule, else `positive` when gap > 0 and `negative` when not."""
    return tie if is_tie(gap, se) else (positive if gap > 0 else negative)


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


def trsp_versus_best(name: str, t) -> list[dict]:
    """TRSP against the best (lowest wiki perplexity) selection-only and +ft baselines of a `compare.table`."""
    d = t.set_index("method")
    if "trsp" not in d.index:
        return []
    tr, out = d.loc["trsp"], []
    plain = d[~d.index.str.endswith("+ft") & ~d.index.isin(["dense", "trsp"])]
    tuned = d[d.index.str.endswith("+ft")]
    for group, label in ((plain, "selection only"), (tuned, "selection + equal-budget fine-tune")):
        if len(group) == 0:
            continue
        best = group["ppl_wiki"].idxmin()
        b = group.loc[best]
        se = diff_se(tr["zs_se"], b["zs_se"]) if "zs_se" in d.columns else float("nan")
        gap = tr["zs_avg"] - b["zs_avg"] if "zs_avg" in d.columns else float("nan")
        out.append({"model": name, "TRSP vs": f"best {label}: {best}",
                    "PPL wiki (TRSP / it)": f"{tr['ppl_wiki']:.1f} / {b['ppl_wiki']:.1f}",
                    "PPL news (TRSP / it)": f"{tr['ppl_news']:.1f} / {b['ppl_news']:.1f}",
                    "TRSP lower PPL in both domains": "yes" if tr["ppl_wiki"] < b["ppl_wiki"] and tr["ppl_news"] < b["ppl_news"] else "no",
                    "zero-shot avg (TRSP - it)": f"{gap:+.3f} (s.e. {se:.3f})",
                    "zero-shot verdict": verdict(gap, se, "TRSP", best)})
    return out


def speed_by_ratio(model: str, ratios: list[float], device: str = "cpu", seed: int = 0, **protocol) -> dict[float, dict]:
    """Dense against the same model with `layers_to_remove(ratio)` layers removed, per ratio, cached.

    The layers are the reverse-order ones: speed depends on the shape only. `protocol`: prefill_len,
    gen_batch, prompt_len, new_tokens, reps (see `speed.compare_speed`)."""
    from .adapters import get_layers
    from .criteria import reverse
    from .models import load_model
    from .removal import remove_layers
    from .results import cached
    from .speed import compare_speed
    from .trsp import layers_to_remove

    loaded: list = []

    def measure(ratio: float) -> dict:
        if not loaded:
            loaded.append(load_model(model, device=device)[0])
        net = loaded[0]
        n = layers_to_remove(ratio, len(get_layers(net)))
        pruned = remove_layers(copy.deepcopy(net), reverse(net, None, n))
        return {"n_removed": n, **compare_speed(net, pruned, seed=seed, **protocol)}

    params = {"model": model, "device": device, **protocol, "seed": seed}
    return {r: cached("speed", {**params, "ratio": r}, lambda r=r: measure(r)) for r in ratios}

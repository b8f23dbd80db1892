"""Where the regeneration of the whole plan stands: the committed comparison `data/results/fresh-check.json`
(written by `tools/fresh_check.py` from `data/fresh/`) as values to glue and a table per chapter.

The reproducibility page quotes these values; the numbers are never typed into prose.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

#: The issue's goal for regenerating the whole plan on 2 cores, in hours.
TARGET_H = 8.0

def check(directory: Path | None = None) -> dict:
    """The committed comparison (`fresh-check.json` of the committed results folder)."""
    from .runner import COMMITTED

    return json.loads((Path(directory or COMMITTED) / "fresh-check.json").read_text())


def values(c: dict) -> dict:
    """Counts, hours and the largest differences, flat, for `glue`."""
    s, rows = c["summary"], c["rows"]
    judged = [x for x in rows if x["within tolerance"] is not None]
    ppl = [abs(v["relative difference"]) for x in judged for k, v in x.items() if k.startswith("ppl_")]
    zs = [abs(x["zs_avg"]["difference"]) for x in judged if "zs_avg" in x]
    gpu = [x for x in judged if x.get("first computed on") == "GPU"]
    return {"regen_rows": s["rows in the plan"], "regen_recomputed": s["recomputed"],
            "regen_within": s["within_tolerance"], "regen_layers_differ": s["layers differ"],
            "regen_gpu_rows": len(gpu), "regen_hours": s["total_hours"],
            "regen_rows_left": s["rows in the plan"] - s["recomputed"],
            "regen_hours_left": s.get("hours left (estimated)", 0.0),
            "regen_hours_all": s["total_hours"] + s.get("hours left (estimated)", 0.0),
            "regen_vs_target": "above" if s["total_hours"] + s.get("hours left (estimated)", 0.0) > TARGET_H
            else "within",
            "regen_ppl_max": max(ppl, default=0.0), "regen_zs_max": max(zs, default=0.0)}


def chapters_table(c: dict) -> pd.DataFrame:
    """Per chapter: its rows, how many are recomputed, their measured hours on 2 cores so far, and the estimated
    hours of the rest (none once every row is in)."""
    from trsp_lib.provenance import REPO

    t = pd.DataFrame(c["summary"]["chapters"]).T
    t.index = [next((REPO / "notebooks").glob(f"{k}_*.ipynb"), Path(k)).stem for k in t.index]
    t.index.name = "chapter"
    cols = ["rows", "recomputed", "hours on 2 cores"] + (["hours left (estimated)"] if t.get(
        "hours left (estimated)", pd.Series([0.0])).fillna(0).any() else [])
    return t[cols].astype({"rows": int, "recomputed": int})


def changed_table(c: dict) -> pd.DataFrame:
    """The recomputed rows beyond tolerance (those that replaced the committed ones among them): what moved."""
    from .style import model_name

    out = []
    for x in c["rows"]:
        if x["within tolerance"] is not False:
            continue
        wiki = x.get("ppl_wiki") or {}
        out.append({"row": f"{x['label']} ({model_name(x['model'])}, seed {x['seed']}, {x['items']} items)",
                    "first computed on": x.get("first computed on"),
                    "layers": "same" if x.get("same layers", True) else
                    f"{x['layers']['committed']} → {x['layers']['recomputed']}",
                    "wiki PPL, committed": wiki.get("committed"), "recomputed": wiki.get("recomputed"),
                    "zero-shot difference": (x.get("zs_avg") or {}).get("difference")})
    return pd.DataFrame(out or [{"row": "none so far"}])


def _family(work: str) -> str:
    for part, name in (("stage 1", "TRSP's stage 1"), ("selections", "selections (SLEB, LaCo, the criteria)"),
                       ("kd", "distillation rows (+kd)"), ("lin", "lin rows (+lin)"), ("+ft", "fine-tuned rows (+ft)"),
                       ("trsp", "TRSP rows (stage 2, evaluation)"), ("dense", "dense rows (evaluation)"),
                       ("speed", "speed and layer scores"), ("scores", "speed and layer scores")):
        if part in work:
            return name
    return "selection rows (evaluation)"


def work_table(c: dict) -> pd.DataFrame:
    """Where the regeneration's hours went: its measured hours by kind of work, largest first."""
    hours: dict[str, float] = {}
    for work, h in c["summary"].get("hours by kind of work", {}).items():
        hours[_family(work)] = hours.get(_family(work), 0.0) + h
    t = pd.DataFrame({"hours on 2 cores": pd.Series(hours, dtype=float)})
    t = t.sort_values("hours on 2 cores", ascending=False)
    t["share"] = t["hours on 2 cores"] / t["hours on 2 cores"].sum()
    t.index.name = "kind of work"
    return t

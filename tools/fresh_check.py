"""Compare a regeneration of the plan with the committed results: one line per row, then a summary.

A regeneration runs the whole plan from an empty results folder apart from data/results/
(`TRSP_RESULTS=data/fresh python -m study run`), so the book is never half old and half new. This script reads
the plan twice, once per folder (each folder makes its own choices on its own validation rows), matches rows by
study label, model, seed, items and ratio, and writes data/results/fresh-check.json:

    python tools/fresh_check.py [--fresh data/fresh] [--out data/results/fresh-check.json]

Tolerances, stated before the regeneration: the same layers removed, perplexity within 1%, zero-shot average
within 0.01.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PPL_TOL, ZS_TOL = 0.01, 0.01


def read_plan(results: Path) -> dict[tuple, dict]:
    """Row identity -> its record in `results` (rows not there are left out)."""
    os.environ["TRSP_RESULTS"] = str(results)
    from study import plan, runner

    P = plan.Params()
    rows, _ = runner.resolved(P)
    out = {}
    for r in rows:
        record = runner.read(r, P, compute=False)
        if record is not None:
            out[(r.label, r.model, r.seed, r.limit, r.ratio, r.kind)] = record
    return out


def compare_row(old: dict, new: dict) -> dict:
    """One line: committed and recomputed values, their differences, and whether each is within tolerance."""
    line: dict = {"first computed on": "GPU" if (old.get("provenance") or {}).get("cuda") else "CPU",
                  "cpu_s": new.get("cpu_s"), "threads": (new.get("provenance") or {}).get("threads")}
    ok = True
    if "removed" in old:
        line["same layers"] = sorted(old["removed"]) == sorted(new.get("removed", []))
        ok &= line["same layers"]
    for col in [c for c in old if c.startswith("ppl_") and isinstance(old[c], (int, float))]:
        rel = (new.get(col, float("nan")) - old[col]) / old[col]
        line[col] = {"committed": old[col], "recomputed": new.get(col), "relative difference": rel}
        ok &= abs(rel) <= PPL_TOL
    if "zs_avg" in old:
        diff = new.get("zs_avg", float("nan")) - old["zs_avg"]
        line["zs_avg"] = {"committed": old["zs_avg"], "recomputed": new.get("zs_avg"), "difference": diff}
        ok &= abs(diff) <= ZS_TOL
    line["within tolerance"] = bool(ok)
    return line


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fresh", default=str(ROOT / "data" / "fresh"))
    ap.add_argument("--out", default=str(ROOT / "data" / "results" / "fresh-check.json"))
    a = ap.parse_args()
    committed, fresh = read_plan(ROOT / "data" / "results"), read_plan(Path(a.fresh))
    lines = [{"label": k[0], "model": k[1], "seed": k[2], "items": k[3], "ratio": k[4], "kind": k[5],
              **(compare_row(committed[k], fresh[k]) if k in committed else {"within tolerance": None})}
             for k in fresh]
    hours = sum((x.get("cpu_s") or 0.0) / max(1, min(2, x.get("threads") or 1)) for x in lines) / 3600
    summary = {"rows in the plan": len(committed), "recomputed": len(lines),
               "within_tolerance": sum(1 for x in lines if x["within tolerance"]),
               "total_hours": round(hours, 2), "tolerances": {"perplexity relative": PPL_TOL, "zero-shot": ZS_TOL,
                                                              "layers": "the same set"}}
    Path(a.out).write_text(json.dumps({"summary": summary, "rows": lines}, indent=1, default=str) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

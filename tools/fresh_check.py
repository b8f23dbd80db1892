"""Compare a regeneration of the plan with the committed results: one line per row, then a summary.

A regeneration runs the whole plan from an empty results folder apart from data/results/
(`TRSP_RESULTS=data/fresh python -m study run --workers 2`), so the book is never half old and half new. This
script reads the plan twice, once per folder (each folder makes its own choices on its own validation rows),
matches rows by study label, model, seed, items, ratio and kind, and writes data/results/fresh-check.json:

    python tools/fresh_check.py [--fresh data/fresh] [--out data/results/fresh-check.json] [--book]

`--adopt` copies every recomputed row that is beyond tolerance over its committed record (the same key, so the
same file name): the committed study then reads the CPU row, and `fresh-check.json` lists it under `replaced`
with its committed and recomputed values.

`--book` also executes every chapter from the regenerated rows (into book/executed-fresh/) and compares every
value the chapters glue with the committed book's (book/executed/, from `make book`): numbers that moved more than
the perplexity tolerance, and every word that changed, such as a verdict ("ties" -> "wins"), are listed under
`glued values`.

Tolerances, stated before the regeneration: the same layers removed, perplexity within 1%, zero-shot average
within 0.01.

Cost: a record's seconds on this 2-core CPU are half its CPU seconds, results computed inside it apart
(`study.runner.cost_s`: one thread uses half the machine). The summary's `total_hours` adds that over every
record of the regeneration (stage-1 outcomes, selections computed inside a row, the rows); `chapters` adds it
over each chapter's rows (a row several chapters read counts in each: what regenerating that chapter alone
costs, stage 1s it shares with other rows apart). Rows not yet recomputed are estimated (`hours left (estimated)`,
per chapter and in all) as `python -m study status` does: from the regeneration's own rows of the same kind, else
from the committed record's cost times the regeneration's measured ratio to the committed costs.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PPL_TOL, ZS_TOL = 0.01, 0.01
#: A row's identity in both folders: study label, model, seed, zero-shot items, ratio, kind.
IDENT = lambda x: (x["label"], x["model"], x["seed"], x["items"], x["ratio"], x["kind"])  # noqa: E731


def read_plan(results: Path, left: dict | None = None) -> dict[tuple, tuple[dict, list[str]]]:
    """Row identity -> (its record in `results`, the chapters that read it); rows not there are left out, or
    put in `left` (identity -> (estimated seconds on 2 cores, chapters)) from `runner.known_costs`."""
    os.environ["TRSP_RESULTS"] = str(results)
    from study import plan, runner

    P = plan.Params()
    out: dict[tuple, tuple[dict, list[str]]] = {}
    found: dict[str, tuple] = {}  # key -> (row, record): the rows `known_costs` calibrates on, read once
    pending: dict[tuple, tuple] = {}  # identity -> (row, chapters) of the rows not in `results`
    for chapter in plan.CHAPTERS:
        rows, _ = runner.resolved(P, chapter)
        for r in rows:
            ident = (r.label, r.model, r.seed, r.limit, r.ratio, r.kind)
            if ident in out or ident in pending:
                (out.get(ident) or pending[ident])[1].append(chapter)
                continue
            key, record = runner.probe(r, P)
            if record is not None:
                out[ident], found[key] = (record, [chapter]), (r, record)
            elif left is not None:
                pending[ident] = (r, [chapter])
    if left is not None:
        est = runner.known_costs(P, own=found)
        left.update({ident: (runner.estimate(est, r), chs) for ident, (r, chs) in pending.items()})
    return out


def compare_row(old: dict, new: dict) -> dict:
    """One line: committed and recomputed values, their differences, and whether each is within tolerance."""
    from study.runner import cost_s

    line: dict = {"first computed on": "GPU" if (old.get("provenance") or {}).get("cuda") else "CPU",
                  "seconds on 2 cores": round(cost_s(new)[0], 1)}
    ok = True
    if "removed" in old:
        line["same layers"] = sorted(old["removed"]) == sorted(new.get("removed", []))
        if not line["same layers"]:
            line["layers"] = {"committed": sorted(old["removed"]), "recomputed": sorted(new.get("removed", []))}
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


def largest(lines: list[dict], where: str, n: int = 3) -> list[dict]:
    """The `n` rows first computed on `where` whose perplexity moved most (relative), with their layers' verdict."""
    def worst(x: dict) -> float:
        return max((abs(v["relative difference"]) for k, v in x.items() if k.startswith("ppl_")), default=0.0)
    picked = sorted((x for x in lines if x.get("first computed on") == where), key=worst, reverse=True)[:n]
    return [{"row": f"{x['label']} ({x['model']}, seed {x['seed']}, {x['items']} items)",
             "largest perplexity difference": worst(x), "same layers": x.get("same layers"),
             "zero-shot difference": (x.get("zs_avg") or {}).get("difference")} for x in picked]


def seconds_by_work(folder: Path) -> dict[str, float]:
    """Seconds on 2 cores of every record in `folder` (each counted once: nested results apart), by kind of work:
    a row's pipeline (its own work: evaluation, fine-tuning, a lin fit), TRSP's stage 1, the selections."""
    from study.runner import cost_s

    out: dict[str, float] = {}
    for path in folder.rglob("*.json"):
        record = json.loads(path.read_text())
        if isinstance(record, dict) and record.get("cpu_s"):
            work = {"stage1": "TRSP stage 1", "selection": "selections"}.get(path.parent.name) or str(
                record.get("method") or record.get("kind") or path.parent.name)
            out[work] = out.get(work, 0.0) + cost_s(record)[0]
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def glued(notebook: Path) -> dict[str, object]:
    """Every value an executed notebook glues as text (figures and tables apart): name -> number or string."""
    import nbformat

    out: dict[str, object] = {}
    for cell in nbformat.read(notebook, as_version=4).cells:
        for o in cell.get("outputs", []):
            name, data = ((o.get("metadata") or {}).get("scrapbook") or {}).get("name"), o.get("data") or {}
            text = data.get("application/papermill.record/text/plain")
            if name and text is not None and len(data) == 1:
                try:
                    out[name] = ast.literal_eval(text)
                except (ValueError, SyntaxError):
                    out[name] = text
    return out


def glue_changes(old: Path, new: Path) -> dict:
    """The glued values of the chapters in `old` and `new` (two executed books) that differ: numbers by more than
    the perplexity tolerance (relative), and any other value (a verdict word, a layer list) that is not equal."""
    numbers, words, n = [], [], 0
    for nb in sorted(old.glob("[0-9]*.ipynb")):
        a, b = glued(nb), glued(new / nb.name) if (new / nb.name).exists() else {}
        for name, va in a.items():
            n += 1
            vb = b.get(name, "(not glued)")
            line = {"chapter": nb.stem, "name": name, "committed": va, "recomputed": vb}
            if isinstance(va, (int, float)) and isinstance(vb, (int, float)) and not isinstance(va, bool):
                rel = abs(vb - va) / abs(va) if va else abs(vb)
                if rel > PPL_TOL:
                    numbers.append({**line, "relative difference": rel})
            elif va != vb:
                words.append(line)
    return {"compared": n, "numbers beyond tolerance": numbers, "other values changed": words}


def adopt(fresh: Path, record: dict) -> Path:
    """Copy the recomputed `record`'s file from `fresh` over the committed one (same relative path, same key)."""
    import shutil

    source = next(p for p in fresh.rglob(f"*{record['key']}.json") if ".claims" not in p.parts)
    dest = ROOT / "data" / "results" / source.relative_to(fresh)
    shutil.copyfile(source, dest)
    return dest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fresh", default=str(ROOT / "data" / "fresh"))
    ap.add_argument("--out", default=str(ROOT / "data" / "results" / "fresh-check.json"))
    ap.add_argument("--adopt", action="store_true", help="replace the committed rows beyond tolerance by the "
                                                          "recomputed ones")
    ap.add_argument("--book", action="store_true", help="also execute the chapters from the regeneration and "
                                                         "compare every glued value with book/executed/")
    a = ap.parse_args()
    left: dict[tuple, tuple[float, list[str]]] = {}
    committed, fresh = read_plan(ROOT / "data" / "results"), read_plan(Path(a.fresh), left)
    previous = Path(a.out)
    replaced = {IDENT(x): x for x in (json.loads(previous.read_text())["summary"].get("replaced", [])
                                      if previous.exists() else [])}  # judged before their adoption
    lines = [{"label": k[0], "model": k[1], "seed": k[2], "items": k[3], "ratio": k[4], "kind": k[5],
              "key": new.get("key"), "chapters": chapters,
              **(replaced[k] if k in replaced else compare_row(committed[k][0], new) if k in committed
                 else {"within tolerance": None})}
             for k, (new, chapters) in fresh.items()]
    for x in lines:
        if x["within tolerance"] is False and a.adopt and IDENT(x) not in replaced:
            replaced[IDENT(x)] = x
            adopt(Path(a.fresh), fresh[IDENT(x)][0])
    chapters: dict[str, dict] = {}
    for _, names in committed.values():
        for c in names:
            ch = chapters.setdefault(c, {"rows": 0, "recomputed": 0, "hours on 2 cores": 0.0})
            ch["rows"] += 1
    for x in lines:
        for c in x["chapters"]:
            ch = chapters.setdefault(c, {"rows": 0, "recomputed": 0, "hours on 2 cores": 0.0})
            ch["recomputed"] += 1
            ch["hours on 2 cores"] += (x.get("seconds on 2 cores") or 0.0) / 3600
    for seconds, names in left.values():
        for c in names:
            ch = chapters[c]
            ch["hours left (estimated)"] = ch.get("hours left (estimated)", 0.0) + seconds / 3600
    for ch in chapters.values():
        ch["hours on 2 cores"] = round(ch["hours on 2 cores"], 2)
        ch["hours left (estimated)"] = round(ch.get("hours left (estimated)", 0.0), 2)
    judged = [x for x in lines if x["within tolerance"] is not None]
    by_work = seconds_by_work(Path(a.fresh))
    summary = {"rows in the plan": len(committed), "recomputed": len(lines),
               "within_tolerance": sum(1 for x in judged if x["within tolerance"]),
               "layers differ": sum(1 for x in judged if x.get("same layers") is False),
               "total_hours": round(sum(by_work.values()) / 3600, 2),
               "hours by kind of work": {k: round(v / 3600, 2) for k, v in by_work.items()},
               "hours left (estimated)": round(sum(sec for sec, _ in left.values()) / 3600, 2),
               "largest differences, CPU rows": largest(judged, "CPU"),
               "largest differences, GPU rows": largest(judged, "GPU"),
               "chapters": dict(sorted(chapters.items())),
               "tolerances": {"perplexity relative": PPL_TOL, "zero-shot": ZS_TOL, "layers": "the same set"}}
    summary["replaced"] = list(replaced.values())
    if a.book:
        fresh_book = ROOT / "book" / "executed-fresh"
        subprocess.run([sys.executable, str(ROOT / "book" / "run_notebooks.py"), "--profile", "default", "--out",
                        str(fresh_book)], env={**os.environ, "TRSP_RESULTS": str(Path(a.fresh)),
                                               "TRSP_CACHED_ONLY": "1"}, check=True)
        summary["glued values"] = glue_changes(ROOT / "book" / "executed", fresh_book)
    Path(a.out).write_text(json.dumps({"summary": summary, "rows": lines}, indent=1, default=str) + "\n")
    print(json.dumps({k: summary[k] for k in ("rows in the plan", "recomputed", "within_tolerance", "layers differ",
                                              "total_hours", "hours left (estimated)")}))


if __name__ == "__main__":
    main()

"""Execute every notebook with papermill for one book profile, then leave the copies for jupyter-book.

    python book/run_notebooks.py --profile default     # what `make book` runs
    python book/run_notebooks.py --profile tiny        # seconds per notebook: `make test`, CI

Parameters come from book/params.yaml (profile -> notebook -> overrides of its `parameters` cell).
Executed copies go to book/executed/ (generated, not committed). A notebook is re-executed only when
its source, its parameters, the library code or the cached results changed (a stamp file records
what each copy was made from); FRESH=1 re-executes every notebook (the Makefile regenerates the results first).

The Classroom pages are the student versions of the assignments, made by `nbgrader generate_assignment`
from classroom/source/ in a scratch course and copied, unexecuted, to book/student/ (generated, not
committed): no solutions, no hidden tests, nothing a student has to fill in already filled in.

The kernels run quiet and styled: TRSP_QUIET=1 silences the library's log lines (the provenance stays
in the results), TQDM_DISABLE=1 its progress bars, and an IPython start-up file applies the book's one
plotting and table style (study/style.py) before the first cell, so the notebooks carry no styling code.

Warnings are errors: papermill stops at a failing cell, and after each run any stderr output that
mentions a warning fails the build with the notebook and cell named (progress bars are disabled).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import papermill
import yaml

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
OUT = BOOK / "executed"
STUDENT = BOOK / "student"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
sys.path.insert(0, str(ROOT / "classroom"))
import course  # noqa: E402  (classroom/course.py: nbgrader on a scratch course)


def digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(str(p.relative_to(ROOT)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def results_digest(results: Path) -> str:
    """Names and sizes of the cached results: a new or recomputed result re-executes the notebooks."""
    files = sorted(results.rglob("*.json")) if results.exists() else []
    return hashlib.sha256("\n".join(f"{p.relative_to(results)}:{p.stat().st_size}"
                                    for p in files).encode()).hexdigest()[:16]


def warnings_in(nb_path: Path) -> list[str]:
    nb = nbformat.read(nb_path, as_version=4)
    found = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            text = out.get("text", "") if out.get("name") == "stderr" else ""
            if "warn" in text.lower():
                found.append(f"{nb_path.name} cell {i}: {text.strip().splitlines()[0][:200]}")
    return found


#: Cell tags that already say how a cell's code shows; a code cell with none of them is collapsed.
SHOWN_AS = {"show-input", "hide-input", "remove-input", "remove-cell", "hide-cell"}
#: The one line a reader sees in place of a chapter's parameter cell, and of the values papermill injected after it.
PARAMETERS_PROMPT = {
    "parameters": "Parameters of this chapter (None: the plan's default; the rerun command is at the end)",
    "injected-parameters": "The values this build passed to those parameters"}


def collapse_code(nb_path: Path) -> None:
    """Collapse the code of every cell not tagged otherwise (myst-nb's `hide-input`: one click shows it).

    Why: a page of the study shows questions, figures and findings; its code is there for those who
    want it. The parameters cell, and the book profile's values papermill injects after it, fold
    behind one line that says what they are; a cell tagged `show-input` stays open (chapter 1: there
    the code is the lesson).
    """
    nb = nbformat.read(nb_path, as_version=4)
    for cell in nb.cells:
        tags = set(cell.metadata.get("tags", []))
        if cell.cell_type != "code" or SHOWN_AS & tags:
            continue
        cell.metadata.setdefault("tags", []).append("hide-input")
        for tag in tags & set(PARAMETERS_PROMPT):
            cell.metadata.setdefault("mystnb", {})["code_prompt_show"] = PARAMETERS_PROMPT[tag]
    nbformat.write(nb, nb_path)


def styled_kernels(ipython_dir: Path) -> None:
    """Kernels started from now on apply study.style before the first cell (an IPython start-up file)."""
    startup = ipython_dir / "profile_default" / "startup"
    startup.mkdir(parents=True, exist_ok=True)
    (startup / "00-trsp-style.py").write_text('__import__("study.style", fromlist=["use"]).use()\n')
    os.environ["IPYTHONDIR"] = str(ipython_dir)


def student_pages() -> None:
    """The assignments' pages: nbgrader's student versions, remade only when the teacher sources change."""
    sources = [p for p in (ROOT / "classroom" / "source").rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    stamp = digest(sources + [ROOT / "classroom" / "nbgrader_config.py"])
    stamp_path = STUDENT / ".stamp"
    if stamp_path.exists() and stamp_path.read_text() == stamp and \
            all((STUDENT / f"{a}.ipynb").exists() for a in course.ASSIGNMENTS):
        print("student versions: unchanged, kept")
        return
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        released = course.release(course.scratch_course(Path(tmp)))
        STUDENT.mkdir(exist_ok=True)
        for name, path in released.items():
            shutil.copy(path, STUDENT / f"{name}.ipynb")
    stamp_path.write_text(stamp)
    print(f"student versions (nbgrader generate_assignment): {time.perf_counter() - t0:.0f} s")


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="trsp-ipython-") as tmp:
        styled_kernels(Path(tmp))
        return run()


def run() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="default", help="a top-level key of book/params.yaml")
    ap.add_argument("--only", default=None, help="comma list of notebook names to run (others are left as they are)")
    ap.add_argument("--out", default=str(OUT), help="where the executed copies go (the book reads book/executed/)")
    args = ap.parse_args()
    out = Path(args.out).resolve()
    params = yaml.safe_load((BOOK / "params.yaml").read_text())
    if args.profile not in params:
        print(f"unknown book profile {args.profile!r}; book/params.yaml has {sorted(params)}", file=sys.stderr)
        return 2
    env = params[args.profile].get("_env", {})
    os.environ.update({k: str(ROOT / v) if k == "TRSP_RESULTS" else str(v) for k, v in env.items()})
    for quiet in ("TRSP_QUIET", "TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS"):
        os.environ.setdefault(quiet, "1")  # log lines and progress bars are noise in a rendered page
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    fresh = os.environ.get("FRESH", "") not in ("", "0")  # re-execute every notebook (`make book FRESH=1` has
    # regenerated the results into their own folder first: `python -m study run`)
    results = Path(os.environ.get("TRSP_RESULTS") or ROOT / "data" / "results")
    lib = digest(sorted((ROOT / "trsp_lib").rglob("*.py")) + sorted((ROOT / "study").rglob("*.py"))
                 + [BOOK / "params.yaml", Path(__file__).resolve()])
    out.mkdir(parents=True, exist_ok=True)
    stamps_path = out / ".stamps.json"  # one file: the copies in executed/ are of one profile at a time
    stamps = json.loads(stamps_path.read_text()) if stamps_path.exists() else {}
    only = set(args.only.split(",")) if args.only else None
    if not only:
        student_pages()
    times = {}
    for nb in NOTEBOOKS:
        name = nb.stem
        if only and name not in only:
            continue
        rel = nb.relative_to(ROOT / "notebooks")
        dest = out / rel
        p = params[args.profile].get(name, {}) or {}
        stamp = hashlib.sha256(json.dumps([args.profile, digest([nb]), p, lib,
                                           results_digest(results)]).encode()).hexdigest()[:16]
        if dest.exists() and stamps.get(str(rel)) == stamp and not fresh:
            print(f"{rel}: unchanged, kept")
            continue
        t0 = time.perf_counter()
        print(f"{rel}: executing with {p or 'its defaults'} ...", flush=True)
        papermill.execute_notebook(str(nb), str(dest), parameters=p, kernel_name="python3", cwd=str(ROOT),
                                   progress_bar=False, log_output=False)
        collapse_code(dest)
        problems = warnings_in(dest)
        if problems:
            print("warnings are errors in this book:\n  " + "\n  ".join(problems), file=sys.stderr)
            return 1
        times[str(rel)] = time.perf_counter() - t0
        print(f"{rel}: {times[str(rel)]:.0f} s")
        stamps[str(rel)] = stamp
        stamps_path.write_text(json.dumps(stamps, indent=1))
        # The results digest moves when a notebook wrote new results: later notebooks see it, earlier
        # ones are re-stamped on the next run (and then kept, since their inputs did not change).
    for nb in NOTEBOOKS:  # restamp with the final results so an unchanged rerun skips everything
        rel = nb.relative_to(ROOT / "notebooks")
        if str(rel) in stamps and (not only or nb.stem in only):
            p = params[args.profile].get(nb.stem, {}) or {}
            stamps[str(rel)] = hashlib.sha256(json.dumps([args.profile, digest([nb]), p, lib,
                                                          results_digest(results)]).encode()).hexdigest()[:16]
    stamps_path.write_text(json.dumps(stamps, indent=1))
    (out / f"times-{args.profile}.json").write_text(json.dumps(times, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The course workflow on nbgrader's own commands: what the Makefile, the book build and the tests share.

    python classroom/course.py release     [--assignment a1] [--force]
    python classroom/course.py grade       [--assignment a1] --submissions DIR [--grades CSV]
    python classroom/course.py feedback    [--assignment a1]
    python classroom/course.py roster      --roster CSV [--due-dates CSV]
    python classroom/course.py student-kit [--out ZIP]

(`make release|grade|feedback|roster|student-kit` call these on classroom/.)  Each step redoes only
what changed: an assignment is released again when its teacher sources changed, a submission is
graded again when it changed (or its assignment did).  The book build and the tests work on a
throw-away copy of the course (`scratch_course`) so they never touch a teacher's gradebook.db.
"""
from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

COURSE = Path(__file__).resolve().parent
ROOT = COURSE.parent
ASSIGNMENTS = ("a1_stage2_loss", "a2_new_criterion", "a3_predict_speedup")
SHORT = {name[:2]: name for name in ASSIGNMENTS}
#: Files of the course directory itself that every nbgrader command reads.
CONFIG = ("nbgrader_config.py", "nbgrader_plugins.py")
#: What must never reach a student: solution and hidden-test markers, the rubrics, the teacher's script.
TEACHER_ONLY = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS", "rubrics.md", "Model answer",
                "Rubric:", "seed=20261130", "def _reference", "def stage2_reference", "def speedup_reference")


class CourseError(Exception):
    """A mistake of the caller, told in one line with the fix."""


def nbgrader(course: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """One nbgrader command in `course`; its kernels import this checkout's trsp_lib.

    nbgrader runs `alembic` from PATH, so the venv's bin goes first; its log is shown on failure."""
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([str(Path(bin_dir) / "nbgrader"), *args], cwd=course, env=env,
                          capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"nbgrader {' '.join(args)} failed in {course}:\n{done.stderr[-4000:]}")
    return done


def scratch_course(dest: Path) -> Path:
    """A copy of the course's configuration and teacher sources in `dest` (no gradebook, no student files)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in CONFIG:
        shutil.copy(COURSE / name, dest)
    shutil.copytree(COURSE / "source", dest / "source", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
    return dest


def assignments(short: str | None, target: str = "grade") -> list[str]:
    """The assignments named by ASSIGNMENT (a1, a1_stage2_loss, ...); all of them when it is empty."""
    if not short:
        return list(ASSIGNMENTS)
    name = SHORT.get(short, short)
    if name not in ASSIGNMENTS:
        raise CourseError(f"unknown assignment {short!r}: use one of {', '.join(SHORT)} (e.g. make {target} "
                          f"ASSIGNMENT=a1), or leave ASSIGNMENT out for all of them")
    return [name]


def _newest(paths) -> float:
    return max((p.stat().st_mtime for p in paths if p.is_file()), default=0.0)


def _source_time(course: Path, name: str) -> float:
    return _newest([*(course / "source" / name).rglob("*"), *(course / c for c in CONFIG)])


def release(course: Path, names=None, force: bool = True) -> dict[str, Path]:
    """`nbgrader generate_assignment` of the assignments (all by default): the student versions in
    release/<assignment>/.  With force=False, only those whose teacher sources changed since."""
    names = list(names or ASSIGNMENTS)
    out = {name: course / "release" / name / f"{name}.ipynb" for name in names}
    stale = [n for n in names if force or not (course / "gradebook.db").exists() or not out[n].exists()
             or out[n].stat().st_mtime < _source_time(course, n)]
    for pattern in (["*"] if len(stale) == len(ASSIGNMENTS) else stale):  # one process for all of them
        nbgrader(course, "generate_assignment", "--force", pattern)
    return out


def _submitted(submissions: Path, name: str) -> list[str]:
    return sorted(p.parent.parent.name for p in submissions.glob(f"*/{name}/{name}.ipynb"))


def _stale(course: Path, submissions: Path, name: str, students: list[str]) -> list[str]:
    """The students whose submission (or whose assignment's teacher version) changed since it was graded."""
    released = _newest([course / "release" / name / f"{name}.ipynb"])
    stale = []
    for student in students:
        graded = course / "autograded" / student / name / f"{name}.ipynb"
        changed = _newest((submissions / student / name).rglob("*"))
        if not graded.exists() or graded.stat().st_mtime < max(changed, released):
            stale.append(student)
    return stale


def grade(course: Path, submissions: Path, out_csv: Path, names=None) -> list[dict]:
    """Autograde what changed in submissions/<student>/<assignment>/<assignment>.ipynb (the layout of
    nbgrader's collect and zip_collect), for the assignments `names` (all by default), in one
    `nbgrader autograde` per assignment; then `nbgrader export` the grades of every assignment to
    `out_csv`.  Returns its rows."""
    if not submissions.is_dir():
        raise CourseError(f"no folder {submissions}: pass SUBMISSIONS=dir holding <student>/<assignment>/<assignment>.ipynb")
    names = list(names or ASSIGNMENTS)
    release(course, names, force=False)
    failed = []
    for name in names:
        students = _submitted(submissions, name)
        stale = _stale(course, submissions, name, students)
        print(f"{name}: {len(stale)} of {len(students)} submissions new or changed", flush=True)
        if not stale:
            continue
        fresh = sorted(set(students) - set(stale))
        done = nbgrader(course, "autograde", "--force", name, f"--CourseDirectory.submitted_directory={submissions.resolve()}",
                        *([f"--CourseDirectory.student_id_exclude={','.join(fresh)}"] if fresh else []), check=False)
        if done.returncode != 0:
            failed.append(name)
            print(done.stderr[-3000:], file=sys.stderr)
    nbgrader(course, "export", f"--to={out_csv.resolve()}")
    if failed:
        raise CourseError(f"nbgrader autograde reported errors for {', '.join(failed)} (above); the other grades are in {out_csv}")
    with out_csv.open() as f:
        return list(csv.DictReader(f))


def feedback(course: Path, names=None) -> list[Path]:
    """`nbgrader generate_feedback`: one HTML page per graded submission in feedback/<student>/<assignment>/,
    remade every time (hand grades live in the gradebook, not in files).  The hidden tests' code and
    tracebacks are left out (nbgrader_plugins.HideHiddenTests)."""
    names = list(names or ASSIGNMENTS)
    graded = [n for n in names if any((course / "autograded").glob(f"*/{n}/{n}.ipynb"))]
    if not graded:
        raise CourseError("nothing graded yet: run make grade SUBMISSIONS=dir first")
    for pattern in (["*"] if len(graded) == len(ASSIGNMENTS) else graded):
        nbgrader(course, "generate_feedback", "--force", pattern)
    return sorted(p for n in graded for p in (course / "feedback").glob(f"*/{n}/{n}.html"))


def _read_csv(path: Path, needed: tuple, what: str, example: str) -> list[dict]:
    if not path.is_file():
        raise CourseError(f"no {what} file {path}: copy {example} and edit it")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    missing = [c for c in needed if c not in (rows[0] if rows else {})]
    if not rows or missing:
        raise CourseError(f"{path}: needs a header row with {', '.join(needed)} and one row per entry (see {example})")
    return rows


def roster(course: Path, roster_csv: Path, due_csv: Path | None = None) -> None:
    """The students (`nbgrader db student import`: id, first_name, last_name, email) and the due dates
    (`nbgrader db assignment import`: name, duedate, e.g. 2027-01-15 23:59:00 UTC) into the gradebook."""
    _read_csv(roster_csv, ("id",), "roster", "classroom/roster.example.csv")
    if due_csv is not None:
        rows = _read_csv(due_csv, ("name", "duedate"), "due dates", "classroom/due_dates.example.csv")
        unknown = sorted({r["name"] for r in rows} - set(ASSIGNMENTS))
        if unknown:
            raise CourseError(f"{due_csv}: unknown assignment(s) {', '.join(unknown)}; the names are {', '.join(ASSIGNMENTS)}")
    nbgrader(course, "db", "student", "import", str(roster_csv.resolve()))
    if due_csv is not None:
        nbgrader(course, "db", "assignment", "import", str(due_csv.resolve()))


# ---- the student kit ------------------------------------------------------------------------------

KIT_README = """# TRSP classroom: the student kit

Three assignments, each a folder with a notebook and its checks file:

{table}

## Install (once)

Python 3.10 or later; the library of the study and Jupyter, nothing else (no models, no data):

```bash
pip install {wheel} jupyterlab pandas
```

(On Linux without a GPU, add `--extra-index-url https://download.pytorch.org/whl/cpu` to get the
small CPU build of PyTorch.)

## Work

```bash
jupyter lab
```

Open the assignment your teacher names, fill in the function (replace `raise NotImplementedError()`),
run every cell and answer the questions in the cells marked for your answers.  The test cells print
`✓ ...` or say what is wrong and how to fix it; hidden tests run when your teacher grades.  Keep the
notebook's name and its cells: hand in the notebook (`{example}`) the way your teacher asks.
"""


def _wheel(dest: Path) -> Path:
    """The library as a wheel, built from this checkout (only pyproject.toml, README.md and trsp_lib/)."""
    with tempfile.TemporaryDirectory(prefix="trsp-wheel-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy(ROOT / name, src)
        shutil.copytree(ROOT / "trsp_lib", src / "trsp_lib", ignore=shutil.ignore_patterns("__pycache__"))
        done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                               "--wheel-dir", str(dest), str(src)], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"building the trsp_lib wheel failed:\n{done.stderr[-3000:]}")
    (wheel,) = dest.glob("trsp_lib-*.whl")
    with zipfile.ZipFile(wheel) as z:
        inside = {n for n in z.namelist() if n.endswith(".py")}
    expected = {p.relative_to(ROOT).as_posix() for p in (ROOT / "trsp_lib").rglob("*.py") if "__pycache__" not in p.parts}
    if expected - inside:
        raise RuntimeError(f"the wheel lacks {sorted(expected - inside)[:5]}: list the library's subpackages in "
                           "pyproject.toml ([tool.setuptools] packages)")
    return wheel


def teacher_material(text: str) -> list[str]:
    """The teacher-only markers found in a file of the kit."""
    return [m for m in TEACHER_ONLY if m in text]


def student_kit(course: Path, out: Path) -> Path:
    """A zip archive for students: the released notebooks and their checks files, the library as a
    wheel and a README with the one install line; no solution, hidden test, rubric or teacher script."""
    released = release(course, force=False)
    top = "trsp-classroom"
    with tempfile.TemporaryDirectory(prefix="trsp-kit-") as tmp:
        wheel = _wheel(Path(tmp))
        table = "\n".join(f"- `{name}/`" for name in ASSIGNMENTS)
        readme = KIT_README.format(table=table, wheel=wheel.name, example=f"{ASSIGNMENTS[0]}/{ASSIGNMENTS[0]}.ipynb")
        out.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr(f"{top}/README.md", readme)
            z.write(wheel, f"{top}/{wheel.name}")
            for name, nb in released.items():
                for path in sorted(nb.parent.iterdir()):
                    if path.is_file():
                        z.write(path, f"{top}/{name}/{path.name}")
    with zipfile.ZipFile(out) as z:
        leaks = {n: teacher_material(z.read(n).decode("utf-8", "replace")) for n in z.namelist() if not n.endswith(".whl")}
    leaks = {n: m for n, m in leaks.items() if m}
    if leaks:
        out.unlink()
        raise RuntimeError(f"teacher material in the student kit, not written: {leaks}")
    return out


# ---- command line (the Makefile's targets) --------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="The classroom kit's course workflow (make release|grade|feedback|roster|student-kit).")
    ap.add_argument("command", choices=("release", "grade", "feedback", "roster", "student-kit"))
    ap.add_argument("--course", type=Path, default=COURSE, help="the nbgrader course directory (default: classroom/)")
    ap.add_argument("--assignment", default="", help="a1, a2, a3 (or a full name); empty: all")
    ap.add_argument("--force", action="store_true", help="release: regenerate even what did not change")
    ap.add_argument("--submissions", type=Path, default=COURSE / "submitted")
    ap.add_argument("--grades", type=Path, default=COURSE / "grades.csv")
    ap.add_argument("--roster", type=Path, default=COURSE / "roster.csv")
    ap.add_argument("--due-dates", type=Path, default=COURSE / "due_dates.csv")
    ap.add_argument("--out", type=Path, default=COURSE / "student-kit.zip")
    args = ap.parse_args(argv)
    course, t0 = args.course.resolve(), time.perf_counter()
    try:
        names = assignments(args.assignment, args.command)
        if args.command == "release":
            for path in release(course, names, force=args.force).values():
                print(f"student version: {path.parent}")
        elif args.command == "grade":
            rows = grade(course, args.submissions, args.grades, names)
            print(f"grades: {args.grades} ({len(rows)} rows; status 'not submitted' where nothing was handed in)")
        elif args.command == "feedback":
            pages = feedback(course, names)
            print(f"feedback: {len(pages)} pages in {course / 'feedback'}/<student>/<assignment>/")
        elif args.command == "roster":
            roster(course, args.roster, args.due_dates if args.due_dates.exists() else None)
            print(f"roster: imported {args.roster}" + (f" and {args.due_dates}" if args.due_dates.exists() else ""))
        else:
            print(f"student kit: {student_kit(course, args.out)}")
    except CourseError as err:
        print(f"{args.command}: {err}", file=sys.stderr)
        return 2
    print(f"({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

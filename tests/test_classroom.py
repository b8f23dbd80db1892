"""The classroom kit through the Makefile and nbgrader's own commands, on a scratch copy of the course:
the student versions hold no solution and no hidden test; one `make grade` gives the references every
autograded point, the near misses part of them, and the shortcuts and a crash none; `make grade
ASSIGNMENT=a1` grades only what changed; the roster's absent student is "not submitted", not 0;
`make feedback` hides the hidden tests; `make student-kit` holds nothing of the teacher's."""
import csv
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import classroom_submissions as subs

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "classroom"))
import course  # noqa: E402

SOURCE = ROOT / "classroom" / "source"
A1 = "a1_stage2_loss"
#: Autograded points out of 10 (the three open questions, 6 points, are graded by hand).
EXPECTED = {"reference": (10, 10, 10), "near-miss": (4, 4, 3), "shortcut": (0, 0, 0)}


def make(*args: str) -> subprocess.CompletedProcess:
    """A classroom target of the Makefile, as a teacher runs it (setup is taken as done)."""
    return subprocess.run(["make", "--no-print-directory", "-o", "setup", *args], cwd=ROOT, capture_output=True,
                          text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def rows(path: Path) -> dict:
    with path.open() as f:
        return {(r["student_id"], r["assignment"]): r for r in csv.DictReader(f)}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """A scratch course: released, then one `make grade` of every fake student (one autograde per assignment)."""
    root = course.scratch_course(tmp_path_factory.mktemp("course"))
    done = make("release", f"COURSE={root}")
    assert done.returncode == 0, done.stderr
    released = {name: root / "release" / name / f"{name}.ipynb" for name in course.ASSIGNMENTS}
    incoming = root / "incoming"
    subs.the_four(SOURCE, released, incoming, crash=(A1,))
    done = make("grade", f"COURSE={root}", f"SUBMISSIONS={incoming}", f"GRADES={root / 'grades.csv'}")
    assert done.returncode == 0, done.stderr[-3000:]
    return root, incoming, released, done


def test_student_versions_hold_no_solution_and_no_hidden_test(graded):
    root, _, released, _ = graded
    for name, path in released.items():
        text = path.read_text()
        assert not course.teacher_material(text), f"{name}: {course.teacher_material(text)} reached the student version"
        code = [line.strip() for line in subs.reference_code(SOURCE / name / f"{name}.ipynb").splitlines()[2:]
                if line.strip()]
        assert code and not any(line in text for line in code), f"{name}: a line of the solution reached the student"
        nb = json.loads(text)
        assert "raise NotImplementedError()" in "".join(subs.solution_cell(nb)["source"])
        answers = [c for c in nb["cells"] if c["cell_type"] == "markdown" and c["metadata"]["nbgrader"].get("solution")]
        assert len(answers) == 3 and all("YOUR ANSWER HERE" in "".join(c["source"]) for c in answers)
        assert sorted(p.name for p in path.parent.iterdir()) == sorted([path.name, f"{name[:2]}_checks.py"])
        assert not course.teacher_material((path.parent / f"{name[:2]}_checks.py").read_text())
    assert not (root / "release" / "teacher").exists()


def test_one_grading_run_separates_reference_near_miss_shortcut_and_crash(graded):
    root, _, _, done = graded
    table = rows(root / "grades.csv")
    assert table[("crash", "a2_new_criterion")]["status"] == "not submitted"  # the crash student handed in a1 only
    scores = {k: (float(r["raw_score"]), float(r["max_score"])) for k, r in table.items()
              if r["status"] != "not submitted"}
    for student, points in EXPECTED.items():
        assert tuple(scores[(student, name)][0] for name in course.ASSIGNMENTS) == points, student
    assert all(scores[k][1] == 16.0 for k in scores)  # 10 autograded + 3 questions x 2 by hand
    assert scores[("crash", A1)] == (0.0, 16.0)
    for student, name in (("shortcut", A1), ("shortcut", "a2_new_criterion"), ("shortcut", "a3_predict_speedup")):
        cells = json.dumps(json.loads((root / "autograded" / student / name / f"{name}.ipynb").read_text())["cells"])
        assert "earns no marks" in cells, (student, name)
    # the warnings a teacher used to see on every run are gone
    for noise in ("SAWarning", "without encryption", "has changed!"):
        assert noise not in done.stdout + done.stderr


def test_grade_one_assignment_regrades_only_what_changed(graded):
    root, incoming, released, _ = graded
    before = {p: p.stat().st_mtime for p in (root / "autograded").glob("*/*/*.ipynb")}
    fixed = subs.reference_code(SOURCE / A1 / f"{A1}.ipynb")
    subs.submit(incoming, "near-miss", released[A1], fixed)  # fixed and resubmitted
    done = make("grade", "ASSIGNMENT=a1", f"COURSE={root}", f"SUBMISSIONS={incoming}", f"GRADES={root / 'grades.csv'}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{A1}: 1 of 4 submissions new or changed" in done.stdout and "a2_new_criterion" not in done.stdout
    changed = [p for p, t in before.items() if p.stat().st_mtime != t]
    assert [p.parent.parent.name for p in changed] == ["near-miss"]
    assert float(rows(root / "grades.csv")[("near-miss", A1)]["raw_score"]) == 10.0
    bad = make("grade", "ASSIGNMENT=a9", f"COURSE={root}", f"SUBMISSIONS={incoming}")
    assert bad.returncode != 0 and "unknown assignment 'a9'" in bad.stderr and "make grade ASSIGNMENT=a1" in bad.stderr


def test_roster_and_due_dates_make_not_submitted_distinct_from_zero(graded, tmp_path):
    root, incoming, _, _ = graded
    roster = tmp_path / "roster.csv"
    roster.write_text((ROOT / "classroom" / "roster.example.csv").read_text() + "crash,Carl,Crash,\n")
    done = make("roster", f"COURSE={root}", f"ROSTER={roster}",
                f"DUE_DATES={ROOT / 'classroom' / 'due_dates.example.csv'}")
    assert done.returncode == 0, done.stderr[-3000:]
    done = make("grade", f"COURSE={root}", f"SUBMISSIONS={incoming}", f"GRADES={root / 'grades.csv'}")
    assert done.returncode == 0 and "0 of 4 submissions new or changed" in done.stdout
    table = rows(root / "grades.csv")
    absent = table[("ada", A1)]
    assert absent["status"] == "not submitted" and absent["raw_score"] == absent["score"] == ""
    assert absent["duedate"].startswith("2027-01-15 23:59:00")
    crashed = table[("crash", A1)]
    assert crashed["status"] == "submitted" and float(crashed["score"]) == 0.0 and crashed["first_name"] == "Carl"
    bad = make("roster", f"COURSE={root}", f"ROSTER={tmp_path / 'missing.csv'}")
    assert bad.returncode != 0 and "roster.example.csv" in bad.stderr


def test_feedback_shows_the_messages_and_not_the_hidden_tests(graded):
    root = graded[0]
    done = make("feedback", "ASSIGNMENT=a1", f"COURSE={root}")
    assert done.returncode == 0, done.stderr[-3000:]
    pages = {p.parent.parent.name: p.read_text() for p in (root / "feedback").glob(f"*/{A1}/{A1}.html")}
    assert {"reference", "near-miss", "shortcut", "crash"} <= set(pages)
    for student, page in pages.items():
        assert "BEGIN HIDDEN TESTS" not in page and "_reference" not in page and "seed=20261130" not in page, student
    assert "earns no marks" in pages["shortcut"]


def test_student_kit_holds_nothing_of_the_teachers(graded, tmp_path):
    root = graded[0]
    kit = tmp_path / "kit.zip"
    done = make("student-kit", f"COURSE={root}", f"KIT={kit}")
    assert done.returncode == 0, done.stderr[-3000:]
    with zipfile.ZipFile(kit) as z:
        names = z.namelist()
        texts = {n: z.read(n).decode() for n in names if not n.endswith(".whl")}
        (wheel,) = [n for n in names if n.endswith(".whl")]
        with zipfile.ZipFile(z.open(wheel)) as w:
            inside = w.namelist()
    expected = {"trsp-classroom/README.md"} | {f"trsp-classroom/{n}/{f}" for n in course.ASSIGNMENTS
                                               for f in (f"{n}.ipynb", f"{n[:2]}_checks.py")}
    assert set(texts) == expected
    for name, text in texts.items():
        assert not course.teacher_material(text), name
        assert "def _reference" not in text and "stage2_reference" not in text and "def flops(" not in text, name
    readme = texts["trsp-classroom/README.md"]
    assert f"pip install {Path(wheel).name} jupyterlab pandas" in readme and "make setup" not in readme
    assert all(n.startswith(("trsp_lib/", "trsp_lib-")) for n in inside) and "trsp_lib/__init__.py" in inside

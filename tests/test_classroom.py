"""The classroom kit through nbgrader's own commands, in a scratch copy of the course: the student
versions hold no solution and no hidden test, and `nbgrader autograde` + `nbgrader export` give the
reference solutions every autograded point and the unfilled notebooks and typical mistakes none."""
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "classroom"))
import course  # noqa: E402

SOURCE = ROOT / "classroom" / "source"

#: A mistake graded by nbgrader (student id -> assignment, the student's solution cell); each notebook
#: costs a kernel start, so every other mistake is graded cell by cell in test_assignments.py.
MISTAKES = {
    "library-call": ("a1_stage2_loss", '''from trsp_lib.method.losses import identity_gap as my_gap

def stage2_loss(x_in, x_out, norm="l2"):
    return my_gap(x_out - x_in, norm)'''),
}


def _solution_cell(nb: dict) -> dict:
    (cell,) = [c for c in nb["cells"] if c["metadata"].get("nbgrader", {}).get("solution") and c["cell_type"] == "code"]
    return cell


def _reference_code(name: str) -> str:
    nb = json.loads((SOURCE / name / f"{name}.ipynb").read_text())
    return "\n".join(line for line in "".join(_solution_cell(nb)["source"]).splitlines()
                     if not line.strip().startswith("### "))


def _submit(submissions: Path, student: str, released: Path, code: str | None) -> None:
    nb = json.loads(released.read_text())
    if code is not None:
        _solution_cell(nb)["source"] = code
    dest = submissions / student / released.parent.name / released.name
    dest.parent.mkdir(parents=True)
    dest.write_text(json.dumps(nb))


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    root = course.scratch_course(tmp_path_factory.mktemp("course"))
    return root, course.release(root)


def test_student_versions_hold_no_solution_and_no_hidden_test(released):
    root, notebooks = released
    for name, path in notebooks.items():
        text = path.read_text()
        for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "rubrics.md", "seed=20261130"):
            assert marker not in text, f"{name}: {marker!r} reached the student version"
        code = [line.strip() for line in _reference_code(name).splitlines()[2:] if line.strip()]  # past def + docstring
        assert code and not any(line in text for line in code), f"{name}: a line of the solution reached the student"
        nb = json.loads(text)
        assert "raise NotImplementedError()" in "".join(_solution_cell(nb)["source"])
        answers = [c for c in nb["cells"] if c["cell_type"] == "markdown" and c["metadata"]["nbgrader"].get("solution")]
        assert len(answers) == 3 and all("YOUR ANSWER HERE" in "".join(c["source"]) for c in answers)
        assert sorted(p.name for p in path.parent.iterdir()) == sorted([path.name, f"{name[:2]}_checks.py"])
    assert not (root / "release" / "teacher").exists()


def test_nbgrader_scores_references_full_and_mistakes_zero(released, tmp_path):
    root, notebooks = released
    subs = tmp_path / "submitted"
    for name, path in notebooks.items():
        _submit(subs, "reference", path, _reference_code(name))
    _submit(subs, "unfilled", notebooks["a1_stage2_loss"], None)  # as handed out
    for student, (name, code) in MISTAKES.items():
        _submit(subs, student, notebooks[name], code)
    rows = course.grade(root, subs, tmp_path / "grades.csv")
    scores = {(r["student_id"], r["assignment"]): (float(r["raw_score"]), float(r["max_score"])) for r in rows}
    for name in course.ASSIGNMENTS:
        assert scores[("reference", name)] == (10.0, 16.0)  # every autograded point; 3 questions x 2 by hand
    assert scores[("unfilled", "a1_stage2_loss")] == (0.0, 16.0)
    for student, (name, _) in MISTAKES.items():
        assert scores[(student, name)] == (0.0, 16.0), student
    graded = json.loads((root / "autograded" / "library-call" / "a1_stage2_loss" / "a1_stage2_loss.ipynb").read_text())
    assert "calling the library's reference implementation earns no marks" in json.dumps(graded["cells"])

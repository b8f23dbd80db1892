"""Run nbgrader's own commands on a course directory: what the book and the tests share.

The Makefile calls nbgrader directly (`make release`, `make grade`); the book build and the tests
work on a throw-away copy of the course (`scratch_course`) so they never touch a teacher's
gradebook.db or release/ folder.
"""
from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

COURSE = Path(__file__).resolve().parent
ROOT = COURSE.parent
ASSIGNMENTS = ("a1_stage2_loss", "a2_new_criterion", "a3_predict_speedup")


def nbgrader(course: Path, *args: str) -> None:
    """One nbgrader command in `course`; its kernels import this checkout's trsp_lib.

    nbgrader runs `alembic` from PATH, so the venv's bin goes first; its log is shown on failure."""
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([str(Path(bin_dir) / "nbgrader"), *args], cwd=course, env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"nbgrader {' '.join(args)} failed in {course}:\n{done.stderr[-4000:]}")


def scratch_course(dest: Path) -> Path:
    """A copy of the course's configuration and teacher sources in `dest` (no gradebook, no student files)."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(COURSE / "nbgrader_config.py", dest)
    shutil.copytree(COURSE / "source", dest / "source", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
    return dest


def release(course: Path) -> dict[str, Path]:
    """`nbgrader generate_assignment` of every assignment (one process): the student versions."""
    nbgrader(course, "generate_assignment", "--force", "*")
    return {name: course / "release" / name / f"{name}.ipynb" for name in ASSIGNMENTS}


def grade(course: Path, submissions: Path, out_csv: Path) -> list[dict]:
    """`nbgrader autograde` every submission (submissions/<student>/<assignment>/<assignment>.ipynb),
    then `nbgrader export` the score table; returns its rows."""
    nbgrader(course, "autograde", "--force", "*", f"--CourseDirectory.submitted_directory={submissions.resolve()}")
    nbgrader(course, "export", f"--to={out_csv.resolve()}")
    with out_csv.open() as f:
        return list(csv.DictReader(f))

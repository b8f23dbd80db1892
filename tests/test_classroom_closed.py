"""The classroom stays closed: no assignment's solution in the book's pages or the chapters' code, and the
assignments quote no measured number of the book (it would go stale when the rows change: they send students to
the page that states it).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "classroom" / "source").glob("*/*.ipynb"))
#: What a student writes in each assignment, and the names a chapter would give the same thing.
STUDENT_WRITES = {"stage2_loss", "my_criterion", "predict_speedup", "assignment1", "assignment2", "assignment3"}


def book_sources() -> list[Path]:
    return sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted((ROOT / "book").glob("*.md"))


def code_and_text(path: Path) -> str:
    if path.suffix != ".ipynb":
        return path.read_text()
    return "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"])


def test_the_student_functions_are_the_ones_this_test_looks_for():
    defined = {m for p in SOURCES for m in re.findall(r"^def (\w+)\(", code_and_text(p), re.M)}
    assert defined - {"_reference"} <= STUDENT_WRITES, defined


@pytest.mark.parametrize("path", book_sources(), ids=lambda p: p.name)
def test_no_page_of_the_book_defines_what_a_student_writes(path: Path):
    text = code_and_text(path)
    found = [name for name in STUDENT_WRITES if re.search(rf"\bdef {name}\(", text)]
    assert not found, f"{path.name} defines {found}: an assignment's solution; call the library or leave it out"
    if path.suffix == ".ipynb":  # teaching.md names the markers to explain them
        assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text, path.name


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.stem)
def test_the_assignments_quote_no_measured_speed_up(path: Path):
    prose = "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"]
                      if c["cell_type"] == "markdown")
    assert not re.search(r"\b\d+\.\d+ ?(x|×)", prose), \
        f"{path.name}: quotes a speed-up; name the book page that measures it instead"

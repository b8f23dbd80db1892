"""Two small extensions of nbgrader's own machinery, named in nbgrader_config.py.

- `GradesExport`: `nbgrader export` with a `status` column, so an assignment never handed in
  ("not submitted", empty scores) is not read as a real 0, and `needs_manual_grade` (the open
  questions not yet graded by hand).
- `HideHiddenTests`: in `nbgrader generate_feedback`, the hidden test cells lose their code (which
  holds the teacher's reference) and their tracebacks; the failure message itself is kept.
- `HiddenChecksumFilter`: silences the one autograde warning that every submission triggers.
"""
from __future__ import annotations

import csv
import logging

from nbconvert.preprocessors import Preprocessor
from nbgrader.api import Gradebook, MissingEntry
from nbgrader.plugins import ExportPlugin
from traitlets import Bool

COLUMNS = ("assignment", "duedate", "student_id", "last_name", "first_name", "email", "status", "timestamp",
           "raw_score", "late_submission_penalty", "score", "max_score", "needs_manual_grade")


class GradesExport(ExportPlugin):
    """One row per student (of the roster or with a submission) and assignment."""

    def export(self, gradebook: Gradebook) -> None:
        dest = self.to or "grades.csv"
        with open(dest, "w", newline="") as f:
            out = csv.DictWriter(f, COLUMNS)
            out.writeheader()
            for assignment in gradebook.assignments:
                if self.assignment and assignment.name not in self.assignment:
                    continue
                for student in gradebook.students:
                    if self.student and student.id not in self.student:
                        continue
                    out.writerow(self._row(gradebook, assignment, student))
        self.log.info("Exported grades to %s", dest)

    @staticmethod
    def _row(gradebook: Gradebook, assignment, student) -> dict:
        row = {"assignment": assignment.name, "duedate": assignment.duedate or "", "student_id": student.id,
               "last_name": student.last_name or "", "first_name": student.first_name or "",
               "email": student.email or "", "max_score": assignment.max_score}
        try:
            sub = gradebook.find_submission(assignment.name, student.id)
        except MissingEntry:
            return {**row, "status": "not submitted"}  # scores left empty: not a 0
        late = sub.late_submission_penalty or 0.0
        return {**row, "status": "late" if late else "submitted", "timestamp": sub.timestamp or "",
                "raw_score": sub.score, "late_submission_penalty": late, "score": max(0.0, sub.score - late),
                "needs_manual_grade": sub.needs_manual_grade}


class HideHiddenTests(Preprocessor):
    """Strip the hidden tests' code and tracebacks from the feedback students get."""

    enabled = Bool(True)
    begin, end = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "code" and self.begin in cell.source:
            kept, hidden = [], False
            for line in cell.source.splitlines():
                hidden = hidden or self.begin in line
                if not hidden:
                    kept.append(line)
                if self.end in line:
                    hidden = False
            cell.source = "\n".join(kept + ["# (the hidden tests are not shown)"])
            for output in cell.get("outputs", []):
                if output.get("output_type") == "error":
                    output["traceback"] = [f"{output.get('ename', 'Error')}: {output.get('evalue', '')}"]
        return cell, resources


class HiddenChecksumFilter(logging.Filter):
    """Drop nbgrader's "Attribute 'checksum' for cell test_hidden has changed!" warning: nbgrader stores
    a hidden test cell's checksum before removing the hidden tests, so it warns for every submission
    (nbgrader issue 1961) and restores the cell all the same.  A change of any other cell still warns."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (str(record.msg).startswith("Attribute '%s' for cell %s has changed")
                    and tuple(record.args or ())[:2] == ("checksum", "test_hidden"))

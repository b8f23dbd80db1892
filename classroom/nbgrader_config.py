"""nbgrader configuration of the trsp classroom kit (read by every `nbgrader` command run in classroom/).

Layout (nbgrader's defaults): source/<assignment>/ holds the teacher versions with the solutions
and hidden tests; `nbgrader generate_assignment` writes the student versions to release/;
submitted/, autograded/, feedback/ and gradebook.db are made while grading and never committed.
"""
import logging
import os
import sys
import warnings

c = get_config()  # noqa: F821  (injected by nbgrader)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # nbgrader_plugins.py, beside this file

c.CourseDirectory.course_id = "trsp"
# The assignments' checks import torch and build tiny models: give a cell time on a busy 2-core machine.
c.ExecutePreprocessor.timeout = 300
# Kernels inherit this: OpenMP threads that wait passively instead of spinning. On a shared or busy CPU a
# tiny model's forward pass then takes milliseconds instead of about a second (measured on 2 busy cores).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# What the student sees in place of a solution.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# Grades: a `status` column ("not submitted" with empty scores, not a 0) and `needs_manual_grade`.
c.ExportApp.plugin_class = "nbgrader_plugins.GradesExport"
# Feedback: no hidden test code (it holds the reference) and no traceback into it.
c.GenerateFeedback.preprocessors = ["nbgrader.preprocessors.GetGrades", "nbgrader_plugins.HideHiddenTests",
                                    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor"]

# Warnings silenced at their source (book/teaching.md, "Messages you may see"):
# nbgrader 0.9's gradebook adds objects to an SQLAlchemy 2 session in an order SQLAlchemy warns about;
# the rows are written all the same.
warnings.filterwarnings("ignore", message=r"Object of type <\w+> not in session", module=r"nbgrader\.api")
# ipykernel 7 warns on every kernel start that its TCP sockets are not encrypted: they listen on
# 127.0.0.1 only, so the kernels (not the notebooks' own warnings) log errors only.
c.ExecutePreprocessor.extra_arguments = ["--IPKernelApp.log_level=ERROR"]
# nbgrader warns "Attribute 'checksum' for cell test_hidden has changed!" for every submission: it stores
# the hidden test cell's checksum before removing the hidden tests (nbgrader issue 1961) and restores the
# cell all the same. Only that warning goes; a change of any other cell still warns.
from nbgrader_plugins import HiddenChecksumFilter  # noqa: E402

logging.getLogger("AutogradeApp").addFilter(HiddenChecksumFilter())

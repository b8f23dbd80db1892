"""nbgrader configuration of the trsp classroom kit (read by every `nbgrader` command run in classroom/).

Layout (nbgrader's defaults): source/<assignment>/ holds the teacher versions with the solutions
and hidden tests; `nbgrader generate_assignment` writes the student versions to release/;
submitted/, autograded/, feedback/ and gradebook.db are made while grading and never committed.
"""
c = get_config()  # noqa: F821  (injected by nbgrader)

c.CourseDirectory.course_id = "trsp"
# The assignments' checks import torch and build tiny models: give a cell time on a busy 2-core machine.
c.ExecutePreprocessor.timeout = 300
# What the student sees in place of a solution.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

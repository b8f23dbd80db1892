"""Fake students' solution cells for the classroom tests: for each assignment a near miss, a shortcut
and a crash (the reference is the teacher notebook's own solution).  Library code is found by walking
the installed package, never by module path, so the submissions survive the library's modules moving."""
from __future__ import annotations

import importlib
import inspect
import pkgutil
import textwrap

import trsp_lib


def library_function(name: str):
    """(module name, function) of the library function `name`, wherever the library keeps it."""
    for info in pkgutil.walk_packages(trsp_lib.__path__, "trsp_lib."):
        module = importlib.import_module(info.name)
        fn = vars(module).get(name)
        if inspect.isfunction(fn) and fn.__module__ == info.name:
            return info.name, fn
    raise LookupError(f"no function {name} in trsp_lib")


def copied_source(name: str, new_name: str) -> str:
    """The library function's source, renamed and with its docstring changed: a student's copy."""
    _, fn = library_function(name)
    src = textwrap.dedent(inspect.getsource(fn)).replace(f"def {name}(", f"def {new_name}(", 1)
    doc = inspect.getdoc(fn)
    return src.replace(doc.splitlines()[0], "my own helper", 1) if doc else src


NEAR_MISS = {
    # the squared norm: right shape, graph, gradient and identity, wrong values
    "a1_stage2_loss": '''def stage2_loss(x_in, x_out, norm="l2"):
    d = x_out - x_in
    per_token = d.norm(dim=-1) ** 2 if norm == "l2" else d.abs().sum(dim=-1) ** 2
    return per_token.mean()''',
    # most important first: a valid, clean, deterministic choice, in the wrong order
    "a2_new_criterion": '''def my_criterion(model, calib, n):
    def rel(x, y):
        return ((y - x).float().norm(dim=-1) / x.float().norm(dim=-1).clamp_min(1e-12)).sum()
    score = [float(s) for s in layer_io(model, calib, reduce=rel)]
    return sorted(range(len(score)), key=lambda i: (-score[i], i))[:n]''',
    # attention counted over all seq_len^2 pairs (not causal)
    "a3_predict_speedup": '''def predict_speedup(n_layers, n_removed, hidden, vocab, seq_len, intermediate):
    def flops(layers):
        per_layer = 2 * seq_len * (4 * hidden * hidden + 3 * hidden * intermediate) + 4 * hidden * seq_len ** 2
        return layers * per_layer + 2 * seq_len * vocab * hidden
    return flops(n_layers) / flops(n_layers - n_removed)''',
}


def shortcuts() -> dict[str, str]:
    """One known shortcut per assignment (built when called: it reads the library's source)."""
    criteria_module, _ = library_function("shortgpt")
    return {
        # the library's identity_gap, copied into the notebook and renamed
        "a1_stage2_loss": 'NORMS = ("l2", "l1")\n\n\n' + copied_source("identity_gap", "gap") + '''

def stage2_loss(x_in, x_out, norm="l2"):
    return gap(x_out - x_in, norm)''',
        # the library's ShortGPT under another name
        "a2_new_criterion": f'''from {criteria_module} import shortgpt as ready_made


def my_criterion(model, calib, n):
    return ready_made(model, calib, n)''',
        # the checks file used as an oracle: scan values until its hash comparison says yes
        "a3_predict_speedup": '''import a3_checks


def predict_speedup(n_layers, n_removed, hidden, vocab, seq_len, intermediate):
    case = (n_layers, n_removed, hidden, vocab, seq_len, intermediate)
    k = a3_checks.VALUE_CASES.index(case) if case in a3_checks.VALUE_CASES else -1
    for i in range(1, 20000):
        if a3_checks._agrees(f"a3|{k}", 1 + i / 2000, a3_checks.EXPECTED.get(f"a3|{k}", ""), 0.02):
            return 1 + i / 2000
    return 1 + n_removed / n_layers''',
    }


#: A solution cell that stops with an error: the function is never defined.
CRASH = {name: f"import a_module_that_does_not_exist\n\n\ndef {fn}(*args, **kwargs):\n    return None"
         for name, fn in (("a1_stage2_loss", "stage2_loss"), ("a2_new_criterion", "my_criterion"),
                          ("a3_predict_speedup", "predict_speedup"))}

#: Rebinding the visible checks in the solution cell: the test cells reload the teacher's checks file.
REBIND = '''import a1_checks

a1_checks.check_type = a1_checks.check_values = a1_checks.check_gradient = a1_checks.check_identity = print
check_type = check_values = check_gradient = check_identity = print


def stage2_loss(x_in, x_out, norm="l2"):
    return None'''


def solution_cell(nb: dict) -> dict:
    (cell,) = [c for c in nb["cells"] if c["metadata"].get("nbgrader", {}).get("solution") and c["cell_type"] == "code"]
    return cell


def reference_code(teacher_notebook) -> str:
    """The reference solution of a teacher notebook, without nbgrader's markers."""
    import json
    nb = json.loads(teacher_notebook.read_text())
    return "\n".join(line for line in "".join(solution_cell(nb)["source"]).splitlines()
                     if not line.strip().startswith("### "))


def submit(submissions, student: str, released, code: str | None) -> None:
    """Write the released notebook with `code` in its solution cell (None: as handed out) where
    nbgrader's collect would put it: submissions/<student>/<assignment>/<assignment>.ipynb."""
    import json
    nb = json.loads(released.read_text())
    if code is not None:
        solution_cell(nb)["source"] = code
    dest = submissions / student / released.parent.name / released.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(nb))


def the_four(source, released: dict, submissions, crash: tuple = ()) -> None:
    """A reference, a near miss and a shortcut for each assignment, and a crash for those in `crash`."""
    short = shortcuts()
    for name, path in released.items():
        for kind, code in (("reference", reference_code(source / name / f"{name}.ipynb")),
                           ("near-miss", NEAR_MISS[name]),
                           ("shortcut", short[name]), ("crash", CRASH[name])):
            if kind != "crash" or name in crash:
                submit(submissions, kind, path, code)

"""The classroom checks, run cell by cell the way nbgrader grades (hidden tests included), in this
process: the reference solutions score every autograded point; a near miss keeps the points of the
properties it has; the known shortcuts (calling or copying the library's answer, calling the checks
file) score nothing; each usual mistake fails with its hint.  The released checks files hold no answer.
The nbgrader round trip itself is tests/test_classroom.py."""
import importlib
import importlib.util
import inspect
import json
import re
import sys
from pathlib import Path

import pytest
import torch

import classroom_submissions as subs
from trsp_lib.surgery.adapters import get_adapter, get_layers, scale_branch_output
from trsp_lib.speed import forward_flops

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "classroom" / "source"
FUNCTION = {"a1_stage2_loss": "stage2_loss", "a2_new_criterion": "my_criterion",
            "a3_predict_speedup": "predict_speedup"}
POINTS = {"a1_stage2_loss": [2, 3, 1, 1, 3], "a2_new_criterion": [2, 2, 3, 3], "a3_predict_speedup": [2, 4, 1, 3]}
for _name in FUNCTION:
    sys.path.insert(0, str(SOURCE / _name))  # the test cells `import aN_checks`, as in the assignment folder
a1, a2, a3 = (importlib.import_module(m) for m in ("a1_checks", "a2_checks", "a3_checks"))


def _teacher_script():
    spec = importlib.util.spec_from_file_location("expected", ROOT / "classroom" / "teacher" / "expected.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


expected = _teacher_script()


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread; on a busy CPU, idle OpenMP threads spin (about 1 s a forward pass)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def notebook(name: str) -> dict:
    return json.loads((SOURCE / name / f"{name}.ipynb").read_text())


def graded(nb: dict, kind: str) -> list[dict]:
    """Cells by their nbgrader role: 'tests' (autograded code), 'solution' (code), 'answers' (markdown)."""
    out = []
    for cell in nb["cells"]:
        m = cell["metadata"].get("nbgrader", {})
        role = ("tests" if m.get("grade") and not m.get("solution") else
                "solution" if m.get("solution") and cell["cell_type"] == "code" else
                "answers" if m.get("solution") and m.get("grade") else None)
        if role == kind:
            out.append(cell)
    return out


def setup_namespace(nb: dict) -> dict:
    ns: dict = {}
    setup = next(c for c in nb["cells"] if c["metadata"].get("nbgrader", {}).get("grade_id") == "setup")
    exec("".join(setup["source"]), ns)
    return ns


def define(name: str, code: str):
    """The student's function as their solution cell `code` defines it, after the setup cell."""
    ns = setup_namespace(notebook(name))
    exec(compile(code, f"<solution of {name}>", "exec"), ns)
    return ns[FUNCTION[name]]


def reference(name: str):
    return define(name, subs.reference_code(SOURCE / name / f"{name}.ipynb"))


def autograde(name: str, fn, ns: dict | None = None) -> tuple[float, float, dict]:
    """Every test cell of the teacher notebook (hidden tests included) with `fn` as the student's function
    (or in the namespace `ns` a solution cell made), as nbgrader does: a cell that raises scores 0.
    Returns (score, max score, {failing cell: message})."""
    nb = notebook(name)
    ns = ns if ns is not None else {**setup_namespace(nb), FUNCTION[name]: fn}
    score = total = 0.0
    errors = {}
    for cell in graded(nb, "tests"):
        m = cell["metadata"]["nbgrader"]
        total += m["points"]
        try:
            exec("".join(cell["source"]), ns)
            score += m["points"]
        except AssertionError as err:
            errors[m["grade_id"]] = str(err)
    return score, total, errors


def not_implemented(*args, **kwargs):
    raise NotImplementedError


@pytest.mark.parametrize("name", sorted(FUNCTION))
def test_the_reference_solution_scores_every_autograded_point(name, capsys):
    assert autograde(name, reference(name)) == (10, 10, {})
    assert capsys.readouterr().out.count(f"✓ {FUNCTION[name]} ") == len(POINTS[name])


@pytest.mark.parametrize("name", sorted(FUNCTION))
def test_an_unfilled_function_scores_nothing_and_is_told_to_fill_in(name):
    score, _, errors = autograde(name, not_implemented)
    assert score == 0 and len(errors) == len(POINTS[name])
    assert all("fill in the function first" in e for e in errors.values())


@pytest.mark.parametrize("name, points", [("a1_stage2_loss", 4), ("a2_new_criterion", 4), ("a3_predict_speedup", 3)])
def test_a_near_miss_earns_some_but_not_all_points(name, points):
    score, total, errors = autograde(name, define(name, subs.NEAR_MISS[name]))
    assert (score, total) == (points, 10) and "test_hidden" in errors


@pytest.mark.parametrize("name", sorted(FUNCTION))
def test_the_known_shortcut_earns_nothing(name):
    score, _, errors = autograde(name, define(name, subs.shortcuts()[name]))
    assert score == 0 and all("earns no marks" in e for e in errors.values()), errors


def test_rebinding_the_checks_in_the_solution_cell_changes_nothing():
    ns = setup_namespace(notebook("a1_stage2_loss"))
    exec(subs.REBIND, ns)  # patches a1_checks' functions and rebinds their names; returns None
    score, _, errors = autograde("a1_stage2_loss", None, ns)
    assert score == 0 and len(errors) == 5 and a1.check_values is not print


@pytest.mark.parametrize("name", sorted(FUNCTION))
def test_teacher_notebooks_are_clean_nbgrader_sources(name):
    nb = notebook(name)
    assert nb["nbformat"] == 4 and nb["metadata"]["kernelspec"]["name"] == "python3"
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, "commit notebooks without outputs"
        assert "parameters" not in cell["metadata"].get("tags", []), "no papermill parameters: nbgrader runs them"
    intro = "".join(nb["cells"][0]["source"])
    for field in ("Learning goals", "Prerequisites", "Time", "Difficulty", "Points"):
        assert f"**{field}**" in intro
    (solution,) = graded(nb, "solution")
    assert "### BEGIN SOLUTION" in "".join(solution["source"])
    tests = graded(nb, "tests")
    assert [c["metadata"]["nbgrader"]["points"] for c in tests] == POINTS[name]
    assert all(("### BEGIN HIDDEN TESTS" in "".join(c["source"])) == (c is tests[-1]) for c in tests)
    assert [c["metadata"]["nbgrader"]["points"] for c in graded(nb, "answers")] == [2, 2, 2]
    ids = [c["metadata"]["nbgrader"]["grade_id"] for c in nb["cells"] if "nbgrader" in c["metadata"]]
    assert len(ids) == len(set(ids)), "nbgrader needs unique grade_ids"
    assert "README" not in json.dumps(nb), "send students to a book page, not to the repository's README"


def test_the_checks_files_share_one_common_block():
    """The three checks files ship alone with their assignment, so the common helpers are copied: keep them equal."""
    begin, end = "# ---- common to the three checks files", "# ---- end of the common part"
    blocks = {m.__file__ and Path(m.__file__).read_text().split(begin, 1)[1].split(end, 1)[0] for m in (a1, a2, a3)}
    assert len(blocks) == 1


def test_the_expected_values_in_the_checks_files_are_up_to_date():
    for name in expected.FILES:
        old, new = expected.updated(name)
        assert old == new, f"run: python classroom/teacher/expected.py ({name})"


def test_the_released_checks_hold_no_answer():
    """No right value appears as a number, and no function of a checks file computes the answer: with
    the student's function replaced by each function of the checks file, no check passes."""
    values = [float(expected.stage2_reference(*[x.double() if torch.is_tensor(x) else x for x in a1.value_inputs(k)]))
              for k in range(len(a1.VALUE_CASES))]
    values += [expected.speedup_reference(*case) for case in a3.VALUE_CASES]
    for module in (a1, a3):
        text = Path(module.__file__).read_text()
        for v in values:
            for shown in (f"{v:.4f}", f"{v:.5g}", repr(v)):
                assert shown not in text, f"{shown} in {module.__file__}"
    for checks, check in ((a1, a1.check_values), (a3, a3.check_values)):
        for _, fn in inspect.getmembers(checks, inspect.isfunction):
            if fn.__module__ == checks.__name__:
                with pytest.raises(AssertionError):
                    check(fn)


# ---- (a) the stage-2 loss: the usual mistakes, each caught by a property's cell with its hint ---------

def _diff(x_in, x_out):
    return x_out - x_in


def _with_l1(l2):
    """A wrong l2 variant that handles l1 correctly, so the l2 cases are the ones that fail."""
    return lambda x_in, x_out, norm="l2": (l2(_diff(x_in, x_out), x_in) if norm == "l2"
                                           else _diff(x_in, x_out).abs().sum(-1).mean())


def fails_with(name: str, fn, cell: str, hint: str) -> None:
    score, total, errors = autograde(name, fn)
    assert score < total and cell in errors, (score, errors)
    assert re.search("hint: .*" + re.escape(hint), errors[cell]), errors[cell]


@pytest.mark.parametrize("wrong, cell, hint", [
    (lambda x_in, x_out, norm="l2": _diff(x_in, x_out).norm(), "test_values", "Frobenius norm of the whole"),
    (lambda x_in, x_out, norm="l2": (_diff(x_in, x_out).norm(dim=-1) ** 2).mean(), "test_values", "SQUARED"),
    (lambda x_in, x_out, norm="l2": _diff(x_in, x_out).norm(dim=-1).sum(), "test_values", "SUM over batch and tokens"),
    (lambda x_in, x_out, norm="l2": torch.nn.functional.mse_loss(x_out, x_in), "test_values", "F.mse_loss"),
    (lambda x_in, x_out, norm="l2": _diff(x_in, x_out).norm(dim=-1).mean(), "test_values",
     "honour the `norm` argument"),
    (lambda x_in, x_out, norm="l2": _diff(x_in, x_out).norm(dim=1).mean(), "test_values", "wrong dimension"),
    (lambda x_in, x_out, norm="l2": _diff(x_in, x_out).norm(dim=-1).mean().item(), "test_type", "not a Python number"),
    (lambda x_in, x_out, norm="l2": _diff(x_in, x_out).norm(dim=-1), "test_type", "reduce to one number"),
    (_with_l1(lambda d, x_in: (d.norm(dim=-1).mean()).detach()), "test_type",
     "not connected to the inputs' autograd graph"),
    (lambda x_in, x_out, norm="l2": _diff(x_in.detach(), x_out).norm(dim=-1).mean(), "test_gradient",
     "do not detach x_in"),
    (_with_l1(lambda d, x_in: torch.sqrt((d ** 2).sum(-1) + 1e-8).mean()), "test_identity", "add no epsilon"),
    (_with_l1(lambda d, x_in: torch.sqrt((d ** 2).sum(-1)).mean()), "test_identity", "NaN at an exact identity layer"),
])
def test_stage2_mistakes_fail_their_property_with_its_hint(wrong, cell, hint):
    fails_with("a1_stage2_loss", wrong, cell, hint)


def test_calling_the_library_or_the_checks_file_earns_nothing():
    module, identity_gap = subs.library_function("identity_gap")
    lib = importlib.import_module(module)
    for wrong in (lambda x_in, x_out, norm="l2": identity_gap(x_out - x_in, norm),
                  lambda x_in, x_out, norm="l2": lib.identity_gap(x_out - x_in, norm),
                  lambda x_in, x_out, norm="l2": ((a1._grid(torch.Generator(), (1,)) * 0 + 1).sum()
                                                  * (x_out - x_in).norm(dim=-1).mean())):
        score, _, errors = autograde("a1_stage2_loss", wrong)
        assert score == 0 and all("earns no marks" in e for e in errors.values())


def test_stage2_failure_names_the_input_and_both_values():
    with pytest.raises(AssertionError) as err:
        a1.check_values(lambda x_in, x_out, norm="l2": (x_out - x_in).norm())
    msg = str(err.value)
    assert "value case 1 of 6" in msg and "shape (" in msg and "expected:" in msg and "got:" in msg


# ---- (b) the criterion ----------------------------------------------------------------------------

def _criterion(name):
    return subs.library_function(name)[1]


def _hooks_left(model, calib, n):
    for layer in get_layers(model):
        layer.register_forward_hook(lambda module, args, out: None)
    reference = subs.reference_code(SOURCE / "a2_new_criterion" / "a2_new_criterion.ipynb")
    return define("a2_new_criterion", reference)(model, calib, n)


def _edits_weights(model, calib, n):
    scale_branch_output(get_layers(model)[0], get_adapter(model), 0.5)
    return list(range(n))


def _grads_left(model, calib, n):
    model(input_ids=calib, labels=calib).loss.backward()
    return list(range(n))


def _train_mode(model, calib, n):
    model.train(not model.training)
    return list(range(n))


def _flip_flop():
    calls = []

    def criterion(model, calib, n):
        calls.append(1)
        return list(range(n)) if len(calls) % 2 else list(range(n))[::-1]
    return criterion


@pytest.mark.parametrize("wrong, cell, hint", [
    (lambda model, calib, n: [0] * n, "test_contract", "appear twice"),
    (lambda model, calib, n: torch.arange(n), "test_contract", ".tolist()"),
    (lambda model, calib, n: [float(i) for i in range(n)], "test_contract", "int(i)"),
    (lambda model, calib, n: list(range(n + 1)), "test_contract", "exactly n"),
    (lambda model, calib, n: list(range(100, 100 + n)), "test_contract", "0-based"),
    (_flip_flop(), "test_contract", "disagree"),
    (_hooks_left, "test_untouched", "handle.remove()"),
    (_edits_weights, "test_untouched", "do not edit weights"),
    (_grads_left, "test_untouched", "zero_grad"),
    (_train_mode, "test_untouched", "model.train(was_training)"),
    (lambda model, calib, n: list(range(len(get_layers(model))))[::-1][:n], "test_identity", "must be the first to go"),
])
def test_criterion_mistakes_fail_their_property_with_its_hint(wrong, cell, hint):
    fails_with("a2_new_criterion", wrong, cell, hint)


@pytest.mark.parametrize("library", ["shortgpt", "block_influence", "copy"])
def test_a_ready_made_criterion_or_its_copy_earns_nothing(library):
    if library == "shortgpt":
        fn = _criterion("shortgpt")
    elif library == "block_influence":
        bi = _criterion("block_influence")

        def fn(model, calib, n):
            score = bi(model, calib)
            return sorted(range(len(score)), key=lambda i: score[i])[:n]
    else:
        module, _ = subs.library_function("shortgpt")
        ns = dict(vars(importlib.import_module(module)))
        exec(subs.copied_source("shortgpt", "mine"), ns)
        fn = ns["mine"]
    score, _, errors = autograde("a2_new_criterion", fn)
    assert score == 0 and all("earns no marks" in e for e in errors.values()), errors


def test_a_crashing_criterion_reports_the_input():
    def crashes(model, calib, n):
        raise KeyError("layers")
    with pytest.raises(AssertionError, match=r"crashed on case 1: tiny llama with 4 layers.*KeyError"):
        a2.check_contract(crashes)


# ---- (c) the speed-up -----------------------------------------------------------------------------

def _speedup(weights, attention, head):
    """A student's formula from per-layer weights, attention FLOPs and head FLOPs (all per token sequence)."""
    def predict(n_layers, n_removed, hidden, vocab, seq_len, intermediate):
        def flops(layers):
            return (layers * (2 * seq_len * weights(hidden, intermediate) + attention(hidden, seq_len))
                    + head(hidden, vocab, seq_len))
        return flops(n_layers) / flops(n_layers - n_removed)
    return predict


LLAMA = lambda h, i: 4 * h * h + 3 * h * i  # noqa: E731
CAUSAL = lambda h, s: 2 * h * s * (s + 1)  # noqa: E731
HEAD = lambda h, v, s: 2 * s * v * h  # noqa: E731


@pytest.mark.parametrize("wrong, cell, hint", [
    (lambda n_layers, n_removed, **shape: n_layers / (n_layers - n_removed), "test_values", "the LM head"),
    (lambda n_layers, n_removed, **shape: (n_layers - n_removed) / n_layers, "test_basic", "ratio is > 1"),
    (_speedup(LLAMA, lambda h, s: 0, HEAD), "test_values", "include attention"),
    (_speedup(LLAMA, CAUSAL, lambda h, v, s: 2 * HEAD(h, v, s)), "test_values", "the embedding lookup is a gather"),
    (_speedup(lambda h, i: 4 * h * h + 2 * h * i, CAUSAL, HEAD), "test_values", "three matrices"),
    (_speedup(LLAMA, lambda h, s: 4 * h * s * s, HEAD), "test_values", "attention is causal"),
    (lambda **case: "fast", "test_basic", "return the ratio as a float"),
])
def test_speedup_mistakes_fail_their_property_with_its_hint(wrong, cell, hint):
    fails_with("a3_predict_speedup", wrong, cell, hint)


def test_calling_the_librarys_flop_count_earns_nothing():
    _, ideal_speedup = subs.library_function("ideal_speedup")

    def via_library(n_layers, n_removed, hidden, vocab, seq_len, intermediate):
        dense = expected.llama(n_layers, hidden, vocab, intermediate)
        pruned = expected.llama(n_layers - n_removed, hidden, vocab, intermediate)
        return ideal_speedup(dense, pruned, seq_len)
    score, _, errors = autograde("a3_predict_speedup", via_library)
    assert score == 0 and all("earns no marks" in e for e in errors.values())


def test_a_correct_formula_written_differently_passes(capsys):
    assert autograde("a3_predict_speedup", _speedup(LLAMA, CAUSAL, HEAD))[0] == 10


def test_the_closed_form_is_the_librarys_flop_count():
    for values in a3.VALUE_CASES[:3]:
        case = dict(zip(a3.KEYS, values))
        model = expected.llama(case["n_layers"], case["hidden"], case["vocab"], case["intermediate"])
        shape = {k: case[k] for k in ("hidden", "vocab", "seq_len", "intermediate")}
        assert expected.flops(case["n_layers"], **shape) == pytest.approx(forward_flops(model, case["seq_len"]),
                                                                          rel=1e-12)

"""The classroom checks, graded the way nbgrader grades: the notebooks' test cells (hidden tests
included) run against the reference solutions, which score every autograded point, and against the
usual mistakes, which each fail every test cell (0 of 10) with their hint, as they failed the single
check of the earlier kit.  The nbgrader round trip itself is tests/test_classroom.py."""
import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest
import torch

import trsp_lib.method.losses
from trsp_lib.surgery.adapters import get_adapter, get_layers, scale_branch_output
from trsp_lib.baselines.criteria import reverse, shortgpt
from trsp_lib.surgery.gating import attach_gates
from trsp_lib.speed import forward_flops

SOURCE = Path(__file__).resolve().parents[1] / "classroom" / "source"
FUNCTION = {"a1_stage2_loss": "stage2_loss", "a2_new_criterion": "my_criterion",
            "a3_predict_speedup": "predict_speedup"}


def _checks(name: str, module: str):
    spec = importlib.util.spec_from_file_location(module, SOURCE / name / f"{module}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[module] = mod  # the notebooks import it by this name
    spec.loader.exec_module(mod)
    return mod


a1 = _checks("a1_stage2_loss", "a1_checks")
a2 = _checks("a2_new_criterion", "a2_checks")
a3 = _checks("a3_predict_speedup", "a3_checks")
check_stage2_loss, check_criterion = a1.check_stage2_loss, a2.check_criterion
check_speedup_prediction, speedup_cases, _flops, _llama = (a3.check_speedup_prediction, a3.speedup_cases, a3._flops,
                                                           a3._llama)


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


def without_markers(source: str) -> str:
    return "\n".join(line for line in source.splitlines() if not line.strip().startswith("### "))


def reference(name: str):
    """The reference solution exactly as the teacher notebook defines it (after its setup cell)."""
    nb = notebook(name)
    ns = setup_namespace(nb)
    exec(without_markers("".join(graded(nb, "solution")[0]["source"])), ns)
    return ns[FUNCTION[name]]


def setup_namespace(nb: dict) -> dict:
    ns: dict = {}
    setup = next(c for c in nb["cells"] if c["metadata"].get("nbgrader", {}).get("grade_id") == "setup")
    exec("".join(setup["source"]), ns)
    return ns


def autograde(name: str, fn) -> tuple[float, float, list[str]]:
    """Run every test cell of the teacher notebook (hidden tests included) with `fn` as the student's
    function, as nbgrader does: a cell that raises scores 0, one that runs scores its points.
    Returns (score, max score, the failing cells' messages)."""
    nb = notebook(name)
    ns = {**setup_namespace(nb), FUNCTION[name]: fn}
    score = total = 0.0
    errors = []
    for cell in graded(nb, "tests"):
        points = cell["metadata"]["nbgrader"]["points"]
        total += points
        try:
            exec("".join(cell["source"]), ns)
            score += points
        except AssertionError as err:
            errors.append(str(err))
    return score, total, errors


def loses_every_mark(name: str, fn, hint: str) -> None:
    score, total, errors = autograde(name, fn)
    assert total == 10 and score == 0, f"scored {score} of {total}"
    assert len(errors) == 2 and re.search("hint: .*" + re.escape(hint), errors[0]), errors


def not_implemented(*args, **kwargs):
    raise NotImplementedError


@pytest.mark.parametrize("name", sorted(FUNCTION))
def test_the_reference_solution_scores_every_autograded_point(name, capsys):
    assert autograde(name, reference(name)) == (10, 10, [])
    assert capsys.readouterr().out.count(f"✓ {FUNCTION[name]} passed") == 2


@pytest.mark.parametrize("name", sorted(FUNCTION))
def test_an_unfilled_function_scores_nothing_and_is_told_to_fill_in(name):
    score, _, errors = autograde(name, not_implemented)
    assert score == 0 and all("fill in the function first" in e for e in errors)


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
    assert [c["metadata"]["nbgrader"]["points"] for c in tests] == [6, 4]
    assert "### BEGIN HIDDEN TESTS" in "".join(tests[1]["source"])
    assert [c["metadata"]["nbgrader"]["points"] for c in graded(nb, "answers")] == [2, 2, 2]
    ids = [c["metadata"]["nbgrader"]["grade_id"] for c in nb["cells"] if "nbgrader" in c["metadata"]]
    assert len(ids) == len(set(ids)), "nbgrader needs unique grade_ids"


def test_the_checks_files_share_one_common_block():
    """The three checks files ship alone with their assignment, so the common helpers are copied: keep them equal."""
    blocks = {(SOURCE / n / f"{m}.py").read_text().split("FILL_IN = ", 1)[1].split("\n# ---- ", 1)[0]
              for n, m in (("a1_stage2_loss", "a1_checks"), ("a2_new_criterion", "a2_checks"),
                           ("a3_predict_speedup", "a3_checks"))}
    assert len(blocks) == 1


# ---- (a) stage-2 loss: the usual mistakes ---------------------------------------------------------

def _diff(x_in, x_out):
    return x_out - x_in


def _with_l1(l2):
    """A wrong l2 variant that handles l1 correctly, so the l2 cases are the ones that fail."""
    return lambda x_in, x_out, norm="l2": (l2(_diff(x_in, x_out), x_in) if norm == "l2"
                                           else _diff(x_in, x_out).abs().sum(-1).mean())


@pytest.mark.parametrize("wrong, hint", [
    (lambda x_in, x_out, norm="l2": _diff(x_in, x_out).norm(), "Frobenius norm of the whole"),
    (lambda x_in, x_out, norm="l2": (_diff(x_in, x_out).norm(dim=-1) ** 2).mean(), "SQUARED"),
    (lambda x_in, x_out, norm="l2": _diff(x_in, x_out).norm(dim=-1).sum(), "SUM over batch and tokens"),
    (lambda x_in, x_out, norm="l2": torch.nn.functional.mse_loss(x_out, x_in), "F.mse_loss"),
    (lambda x_in, x_out, norm="l2": _diff(x_in, x_out).norm(dim=-1).mean(), "honour the `norm` argument"),
    (lambda x_in, x_out, norm="l2": _diff(x_in, x_out).norm(dim=-1).mean().item(), "not a Python number"),
    (lambda x_in, x_out, norm="l2": _diff(x_in, x_out).norm(dim=-1), "reduce to one number"),
    (_with_l1(lambda d, x_in: (d.norm(dim=-1).mean()).detach()), "not connected to the inputs' autograd graph"),
    (lambda x_in, x_out, norm="l2": _diff(x_in.detach(), x_out).norm(dim=-1).mean(), "do not detach x_in"),
    (_with_l1(lambda d, x_in: torch.sqrt((d ** 2).sum(-1) + 1e-8).mean()), "add no epsilon"),
    (_with_l1(lambda d, x_in: torch.sqrt((d ** 2).sum(-1)).mean()), "NaN at an exact identity layer"),
])
def test_stage2_mistakes_lose_every_mark_with_their_hint(wrong, hint):
    loses_every_mark("a1_stage2_loss", wrong, hint)


def _direct(x_in, x_out, norm="l2"):
    return trsp_lib.method.losses.identity_gap(x_out - x_in, norm)


def _renamed(x_in, x_out, norm="l2"):
    from trsp_lib.method.losses import identity_gap as gap
    return gap(x_out - x_in, norm)


@pytest.mark.parametrize("wrong", [_direct, _renamed,
                                   lambda x_in, x_out, norm="l2": a1.identity_gap(x_out - x_in, norm)])
def test_calling_the_librarys_identity_gap_loses_every_mark(wrong):
    loses_every_mark("a1_stage2_loss", wrong, "calling the library's reference implementation earns no marks")


def test_stage2_failure_names_the_input_and_both_values():
    with pytest.raises(AssertionError) as err:
        check_stage2_loss(lambda x_in, x_out, norm="l2": (x_out - x_in).norm())
    msg = str(err.value)
    assert "case 1 of 6" in msg and "shape (" in msg and "expected:" in msg and "got:" in msg


# ---- (b) criterion: the usual mistakes ------------------------------------------------------------

def _hooks_left(model, calib, n):
    for layer in get_layers(model):
        layer.register_forward_hook(lambda module, args, out: None)
    return shortgpt(model, calib, n)


def _edits_weights(model, calib, n):
    scale_branch_output(get_layers(model)[0], get_adapter(model), 0.5)
    return shortgpt(model, calib, n)


def _grads_left(model, calib, n):
    model(input_ids=calib, labels=calib).loss.backward()
    return shortgpt(model, calib, n)


def _train_mode(model, calib, n):
    model.train()
    return shortgpt(model, calib, n)


def _flip_flop():
    calls = []

    def criterion(model, calib, n):
        calls.append(1)
        out = shortgpt(model, calib, n)
        return out if len(calls) % 2 else out[::-1]
    return criterion


@pytest.mark.parametrize("wrong, hint", [
    (lambda model, calib, n: [0] * n, "appear twice"),
    (lambda model, calib, n: torch.arange(n), ".tolist()"),
    (lambda model, calib, n: [float(i) for i in range(n)], "int(i)"),
    (lambda model, calib, n: list(range(n + 1)), "exactly n"),
    (lambda model, calib, n: list(range(100, 100 + n)), "0-based"),
    (lambda model, calib, n: (attach_gates(model, "output"), list(range(n)))[1], "detach_gates"),
    (_hooks_left, "handle.remove()"),
    (_edits_weights, "do not edit weights"),
    (_grads_left, "zero_grad"),
    (_train_mode, "model.train(was_training)"),
    (_flip_flop(), "disagree"),
    (reverse, "must be the first to go"),
])
def test_criterion_mistakes_lose_every_mark_with_their_hint(wrong, hint):
    loses_every_mark("a2_new_criterion", wrong, hint)


def test_a_library_criterion_passes(capsys):
    check_criterion(shortgpt, cases=((5, 0, 2, 3),))
    assert "✓ shortgpt passed 1 cases" in capsys.readouterr().out


def test_a_crashing_criterion_reports_the_input():
    def crashes(model, calib, n):
        raise KeyError("layers")
    with pytest.raises(AssertionError, match=r"crashed on case 1 of 3: tiny llama with 4 layers.*KeyError"):
        check_criterion(crashes)


# ---- (c) speed-up: the usual mistakes -------------------------------------------------------------

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


@pytest.mark.parametrize("wrong, hint", [
    (lambda n_layers, n_removed, **shape: n_layers / (n_layers - n_removed), "the LM head"),
    (lambda n_layers, n_removed, **shape: (n_layers - n_removed) / n_layers, "not pruned / dense"),
    (_speedup(LLAMA, lambda h, s: 0, HEAD), "include attention"),
    (_speedup(LLAMA, CAUSAL, lambda h, v, s: 2 * HEAD(h, v, s)), "the embedding lookup is a gather"),
    (_speedup(lambda h, i: 4 * h * h + 2 * h * i, CAUSAL, HEAD), "three matrices"),
    (_speedup(LLAMA, lambda h, s: 4 * h * s * s, HEAD), "attention is causal"),
    (lambda **case: "fast", "return the ratio as a float"),
])
def test_speedup_mistakes_lose_every_mark_with_their_hint(wrong, hint):
    loses_every_mark("a3_predict_speedup", wrong, hint)


def test_calling_the_librarys_flop_count_loses_every_mark():
    from trsp_lib.speed import ideal_speedup

    def via_library(n_layers, n_removed, hidden, vocab, seq_len, intermediate):
        dense = _llama(n_layers, hidden, vocab, intermediate)
        pruned = _llama(n_layers - n_removed, hidden, vocab, intermediate)
        return ideal_speedup(dense, pruned, seq_len)
    loses_every_mark("a3_predict_speedup", via_library, "calling the library's reference implementation earns no marks")


def test_a_correct_formula_written_differently_passes(capsys):
    check_speedup_prediction(_speedup(LLAMA, CAUSAL, HEAD))
    assert "passed 6 cases" in capsys.readouterr().out


def test_the_closed_form_is_the_librarys_flop_count():
    for case in speedup_cases(n_random=2, seed=1):
        model = _llama(case["n_layers"], case["hidden"], case["vocab"], case["intermediate"])
        shape = {k: case[k] for k in ("hidden", "vocab", "seq_len", "intermediate")}
        assert _flops(case["n_layers"], **shape) == pytest.approx(forward_flops(model, case["seq_len"]), rel=1e-12)

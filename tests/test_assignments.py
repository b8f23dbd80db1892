"""The classroom graders: the notebooks' reference solutions pass, the usual mistakes fail with their hint."""
import json
import re
from pathlib import Path

import pytest
import torch

from trsp_lib.adapters import get_adapter, get_layers, scale_branch_output
from trsp_lib.assignments import (_flops, _llama, check_criterion, check_speedup_prediction, check_stage2_loss,
                                  speedup_cases)
from trsp_lib.criteria import reverse, shortgpt
from trsp_lib.gating import attach_gates
from trsp_lib.speed import forward_flops

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks" / "assignments"
ASSIGNMENTS = {"a1_stage2_loss.ipynb": ("stage2_loss", check_stage2_loss),
               "a2_new_criterion.ipynb": ("my_criterion", check_criterion),
               "a3_predict_speedup.ipynb": ("predict_speedup", check_speedup_prediction)}


def notebook(name: str) -> dict:
    return json.loads((NOTEBOOKS / name).read_text())


def tagged(nb: dict, tag: str) -> list[dict]:
    return [c for c in nb["cells"] if tag in c["metadata"].get("tags", [])]


def solution_of(name: str):
    """The reference solution exactly as the notebook's `solution` cell defines it."""
    (cell,) = tagged(notebook(name), "solution")
    namespace = {"solution": True}
    exec("".join(cell["source"]), namespace)
    return namespace[ASSIGNMENTS[name][0]]


def not_implemented(*args, **kwargs):
    raise NotImplementedError


@pytest.mark.parametrize("name", sorted(ASSIGNMENTS))
def test_the_notebooks_reference_solution_passes(name, capsys):
    ASSIGNMENTS[name][1](solution_of(name))
    assert capsys.readouterr().out.startswith(f"✓ {ASSIGNMENTS[name][0]} passed")


@pytest.mark.parametrize("name", sorted(ASSIGNMENTS))
def test_notebooks_are_clean_and_parametrised(name):
    nb = notebook(name)
    assert nb["nbformat"] == 4 and nb["metadata"]["kernelspec"]["name"] == "python3"
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, "commit notebooks without outputs"
    (params,) = tagged(nb, "parameters")
    source = "".join(params["source"])
    for line in ("seed = 0", 'device = "cpu"', "solution = False"):
        assert line in source
    at = nb["cells"].index(tagged(nb, "solution")[0])
    assert "raise NotImplementedError" in "".join(nb["cells"][at - 1]["source"])  # the student's skeleton, then the solution


@pytest.mark.parametrize("check", [check_stage2_loss, check_criterion, check_speedup_prediction])
def test_an_unfilled_function_is_told_to_fill_in(check):
    with pytest.raises(AssertionError, match="fill in the function first"):
        check(not_implemented)


# ---- (a) stage-2 loss: the usual mistakes ---------------------------------------------------------

def _diff(x_in, x_out):
    return x_out - x_in


def _with_l1(l2):
    """A wrong l2 variant that handles l1 correctly, so the l2 cases are the ones that fail."""
    return lambda x_in, x_out, norm="l2": l2(_diff(x_in, x_out), x_in) if norm == "l2" else _diff(x_in, x_out).abs().sum(-1).mean()


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
def test_stage2_mistakes_fail_with_their_hint(wrong, hint):
    with pytest.raises(AssertionError, match="hint: .*" + re.escape(hint)):
        check_stage2_loss(wrong)


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
def test_criterion_mistakes_fail_with_their_hint(wrong, hint):
    with pytest.raises(AssertionError, match="hint: .*" + re.escape(hint)):
        check_criterion(wrong)


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
            return layers * (2 * seq_len * weights(hidden, intermediate) + attention(hidden, seq_len)) + head(hidden, vocab, seq_len)
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
def test_speedup_mistakes_fail_with_their_hint(wrong, hint):
    with pytest.raises(AssertionError, match="hint: .*" + re.escape(hint)):
        check_speedup_prediction(wrong)


def test_a_correct_formula_written_differently_passes(capsys):
    check_speedup_prediction(_speedup(LLAMA, CAUSAL, HEAD))
    assert "passed 6 cases" in capsys.readouterr().out


def test_the_closed_form_is_the_librarys_flop_count():
    for case in speedup_cases(n_random=2, seed=1):
        model = _llama(case["n_layers"], case["hidden"], case["vocab"], case["intermediate"])
        shape = {k: case[k] for k in ("hidden", "vocab", "seq_len", "intermediate")}
        assert _flops(case["n_layers"], **shape) == pytest.approx(forward_flops(model, case["seq_len"]), rel=1e-12)

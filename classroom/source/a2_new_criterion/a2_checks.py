"""Checks for assignment 2 (a layer-importance criterion), called by the notebook's nbgrader test cells.

Each check runs the student's function on seeded inputs against trsp_lib and prints one line on
success.  On failure it raises AssertionError with the input, the expected and obtained values, and a
hint naming the usual mistake when the wrong answer matches one, so the message teaches, not just
judges.  nbgrader's test cells call it: a failing check loses that cell's points.  This file ships with
the student version and is overwritten by the teacher's copy when nbgrader autogrades.
"""
from __future__ import annotations

import sys
from typing import Any, Callable

import torch
from torch import nn

from trsp_lib.surgery.adapters import get_adapter, get_layers, scale_branch_output
from trsp_lib.models import tiny_model

FILL_IN = ("fill in the function first: replace the `raise NotImplementedError` line with your code, "
           "then run that cell and this one again")


def _name(fn: Callable) -> str:
    return getattr(fn, "__name__", "your function")


def _call(fn: Callable, where: str, *args, forbidden: str = "", **kwargs) -> Any:
    """Call the student's function, turning NotImplementedError and crashes into a readable failure.

    `forbidden` is the library file that holds the answer: a call into it during the student's
    function (however it was imported or renamed) fails, since the assignment is to write it."""
    calls: list[str] = []

    def watch(frame, event, arg):
        if event == "call" and frame.f_code.co_filename == forbidden:
            calls.append(frame.f_code.co_name)

    previous = sys.getprofile()
    sys.setprofile(watch if forbidden else previous)
    try:
        result = fn(*args, **kwargs)
    except NotImplementedError:
        raise AssertionError(f"{_name(fn)} raised NotImplementedError: {FILL_IN}.") from None
    except Exception as err:
        raise AssertionError(f"{_name(fn)} crashed on {where}: {type(err).__name__}: {err}") from err
    finally:
        sys.setprofile(previous)
    if calls:
        module = forbidden.rsplit("/", 1)[-1].removesuffix(".py")
        raise _fail(fn, where, "your own computation", f"a call of the library's trsp_lib.{module}.{calls[0]}",
                    "the assignment is to write this yourself with torch operations; calling the library's "
                    "reference implementation earns no marks")
    return result


def _fail(fn: Callable, where: str, expected: Any, got: Any, hint: str) -> AssertionError:
    return AssertionError(f"{_name(fn)} is wrong on {where}\n  expected: {expected}\n  got:      {got}\n  hint: {hint}")


# ---- an importance criterion ----------------------------------------------------------------------

#: (n_layers, model seed, n to remove, layer made an exact identity)
CRITERION_CASES = ((4, 0, 2, 1), (6, 1, 2, 3), (8, 2, 3, 5))


def _hook_count(model: nn.Module) -> int:
    names = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    return sum(len(getattr(m, a, {})) for m in model.modules() for a in names)


@torch.no_grad()
def _logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids, use_cache=False).logits.float()


def _snapshot(model: nn.Module, ids: torch.Tensor) -> dict:
    return {"classes": [type(layer).__name__ for layer in get_layers(model)], "hooks": _hook_count(model),
            "training": model.training, "logits": _logits(model, ids)}


def _check_untouched(fn: Callable, model: nn.Module, ids: torch.Tensor, before: dict, where: str) -> None:
    """The model must come back as it went in: same layers, no hooks, same mode, same logits, no grads."""
    classes = [type(layer).__name__ for layer in get_layers(model)]
    if classes != before["classes"]:
        raise _fail(fn, where, f"decoder layers {before['classes']}", f"{classes}",
                    "your criterion left wrappers on the layers (e.g. GatedLayer); if you call attach_gates, call "
                    "detach_gates(model, gating, fold=False) in a `finally:` block (see trsp_lib.baselines.criteria.captured_io)")
    if _hook_count(model) != before["hooks"]:
        raise _fail(fn, where, f"{before['hooks']} hooks on the model", f"{_hook_count(model)} hooks",
                    "a forward hook was not removed: keep the handle from register_forward_hook and call "
                    "handle.remove() in a `finally:` block, or later runs see stale hooks")
    if model.training != before["training"]:
        raise _fail(fn, where, f"model.training == {before['training']}", f"model.training == {model.training}",
                    "restore the mode you found: was_training = model.training ... model.train(was_training)")
    after = _logits(model, ids)
    if not torch.allclose(after, before["logits"], rtol=1e-5, atol=1e-5):
        raise _fail(fn, where, "the same logits before and after the call",
                    f"logits changed by up to {(after - before['logits']).abs().max().item():.3g}",
                    "a criterion only chooses layers: do not edit weights (or work on copy.deepcopy(model))")
    if any(p.grad is not None for p in model.parameters()):
        raise _fail(fn, where, "no gradients left in .grad", "parameters with .grad set",
                    "call model.zero_grad(set_to_none=True) when you are done with gradients")


def _check_choice(fn: Callable, got: Any, n_layers: int, n: int, where: str) -> list[int]:
    if isinstance(got, torch.Tensor):
        raise _fail(fn, where, f"a list of {n} ints", f"a tensor {got}", "convert with .tolist()")
    if not isinstance(got, (list, tuple)):
        raise _fail(fn, where, f"a list of {n} ints", f"{type(got).__name__} {got!r}", "return a list of layer indices")
    bad = [i for i in got if not isinstance(i, int) or isinstance(i, bool)]
    if bad:
        raise _fail(fn, where, f"a list of {n} Python ints", f"{list(got)!r} (element types "
                    f"{sorted({type(i).__name__ for i in bad})})", "convert each index with int(i) (or use .tolist())")
    got = list(got)
    dupes = sorted({i for i in got if got.count(i) > 1})
    if dupes:
        raise _fail(fn, where, f"{n} distinct layers", f"{got}",
                    f"layer(s) {dupes} appear twice: each layer can be removed once; sort all layers by your score "
                    "and take the first n: sorted(range(L), key=lambda i: (score[i], i))[:n]")
    if len(got) != n:
        raise _fail(fn, where, f"exactly n = {n} layers", f"{len(got)}: {got}", "return exactly n indices ([:n])")
    out = [i for i in got if not 0 <= i < n_layers]
    if out:
        raise _fail(fn, where, f"indices in 0..{n_layers - 1}", f"{got}", f"{out} out of range: indices are 0-based")
    return got


def check_criterion(fn: Callable, cases: tuple = CRITERION_CASES, arch: str = "llama", device: str = "cpu") -> None:
    """Grade ``criterion(model, calib, n) -> list[int]``: the shared contract of trsp_lib.baselines.criteria
    (n distinct valid ints, deterministic, the model left as found) and an identity layer picked first."""
    for k, (n_layers, seed, n, identity) in enumerate(cases):
        model = tiny_model(arch, n_layers=n_layers, seed=seed).to(device)
        g = torch.Generator().manual_seed(seed)
        calib = torch.randint(1, 100, (4, 16), generator=g).to(device)
        ids = torch.randint(1, 100, (2, 8), generator=g).to(device)
        where = (f"case {k + 1} of {len(cases)}: tiny {arch} with {n_layers} layers (seed {seed}), "
                 f"calib {tuple(calib.shape)}, n={n}")
        before = _snapshot(model, ids)
        first = _call(fn, where, model, calib, n)
        _check_untouched(fn, model, ids, before, where)
        first = _check_choice(fn, first, n_layers, n, where)
        second = _check_choice(fn, _call(fn, where + " (second call)", model, calib, n), n_layers, n, where)
        if second != first:
            raise _fail(fn, where, f"the same layers on a second call: {first}", f"{second}",
                        "two calls on the same model and data disagree: seed any randomness and do not keep "
                        "state between calls")
        scale_branch_output(get_layers(model)[identity], get_adapter(model), 0.0)  # X_out == X_in exactly
        where = f"{where}, layer {identity} made an exact identity (its residual branches output 0)"
        before = _snapshot(model, ids)
        picked = _call(fn, where, model, calib, n)
        _check_untouched(fn, model, ids, before, where)
        picked = _check_choice(fn, picked, n_layers, n, where)
        if picked[0] != identity:
            raise _fail(fn, where, f"layer {identity} first", f"{picked}",
                        "a layer with X_out == X_in changes nothing, so it must be the first to go: score layers by "
                        "how much they change their input (e.g. 1 - cos(X_in, X_out) is 0 there) and return them "
                        "least important first (ascending score); a rule by position alone cannot see this")
    print(f"✓ {_name(fn)} passed {len(cases)} cases: n distinct valid layers, deterministic, model left untouched "
          "(layers, hooks, mode, logits), identity layer picked first")



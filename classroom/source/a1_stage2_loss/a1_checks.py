"""Checks for assignment 1 (the stage-2 loss), called by the notebook's nbgrader test cells.

Each check runs the student's function on seeded inputs against trsp_lib and prints one line on
success.  On failure it raises AssertionError with the input, the expected and obtained values, and a
hint naming the usual mistake when the wrong answer matches one, so the message teaches, not just
judges.  nbgrader's test cells call it: a failing check loses that cell's points.  This file ships with
the student version and is overwritten by the teacher's copy when nbgrader autogrades.
"""
from __future__ import annotations

import math
import sys
from typing import Any, Callable

import torch

import trsp_lib.method.losses
from trsp_lib.method.losses import identity_gap

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


# ---- the stage-2 loss -----------------------------------------------------------------------------

_HINT_GRAPH = ("the result is not connected to the inputs' autograd graph: do not call .item(), .detach() or "
               "torch.tensor(...) on it and do not compute it under torch.no_grad(); stage 2 backpropagates it")
_HINT_GENERIC = ("per token, take the norm of x_out - x_in over the hidden dimension (dim=-1): 'l2' = Euclidean "
                 "norm, 'l1' = sum of |.|, not squared; then average over batch and tokens (.mean())")


def _per_token(d: torch.Tensor, norm: str, dim: int = -1) -> torch.Tensor:
    return d.norm(dim=dim) if norm == "l2" else d.abs().sum(dim=dim)


def _stage2_mistakes(d: torch.Tensor, norm: str) -> list[tuple[torch.Tensor, str]]:
    """(value, hint) for the usual wrong stage-2 losses, most specific first."""
    t = _per_token(d, norm)
    return [
        (d.norm() if norm == "l2" else d.abs().sum(),
         "this is ONE Frobenius norm of the whole [batch, tokens, hidden] tensor (what the released code does); "
         "take the norm per token over the hidden dimension only (dim=-1), then the mean over batch and tokens, "
         "so lambda2 does not depend on batch size or sequence length"),
        ((t ** 2).mean(),
         "this is the SQUARED norm (an MSE-style penalty); TRSP uses the norm itself: a squared penalty's "
         "gradient fades as the layer nears identity, the plain norm keeps pushing"),
        ((d ** 2).mean(),
         "this is the mean of squares over all elements (F.mse_loss): it squares the differences and averages "
         "over the hidden dimension too; use the unsquared vector norm over dim=-1, then the mean over tokens"),
        (t.sum(), "this is a SUM over batch and tokens; average them instead (.mean()), so the term does not grow "
                  "with batch size or sequence length"),
        (t.sum(dim=-1).mean(), "this sums over tokens (and averages over the batch); average over tokens too"),
        (t.sum(dim=0).mean(), "this sums over the batch (and averages over tokens); average over the batch too"),
        (d.abs().mean() if norm == "l1" else (t / math.sqrt(d.shape[-1])).mean(),
         "this also averages over the hidden dimension: a token's norm runs over ALL hidden units "
         "(l1 = sum of |d|, l2 = sqrt of the sum of squares); only batch and tokens are averaged"),
        (_per_token(d, "l1" if norm == "l2" else "l2").mean(),
         f"this is the other norm: honour the `norm` argument (asked for {norm!r}; 'l2' = Euclidean, "
         "'l1' = sum of absolute values, both over dim=-1)"),
        (_per_token(d, norm, dim=1).mean(),
         "the norm runs over the wrong dimension (tokens, dim=1); inputs are [batch, tokens, hidden]: use dim=-1"),
    ]


def _stage2_hint(d: torch.Tensor, norm: str, got: torch.Tensor) -> str:
    for value, hint in _stage2_mistakes(d, norm):
        if torch.allclose(got.detach().float(), value.float(), rtol=1e-4, atol=1e-6):
            return hint
    return _HINT_GENERIC + " (see the definition in the assignment's introduction)"


def _head(t: torch.Tensor) -> str:
    return str([round(v, 5) for v in t.flatten()[:4].tolist()])[:-1] + ", ...]"


def _grad_of(loss: torch.Tensor, *xs: torch.Tensor) -> list[torch.Tensor | None]:
    return list(torch.autograd.grad(loss, xs, allow_unused=True))


def _check_stage2_case(fn: Callable, x_in: torch.Tensor, x_out: torch.Tensor, norm: str, where: str) -> torch.Tensor:
    """One case: type, shape, no in-place edits, graph connection; returns the student's loss."""
    saved = x_in.detach().clone(), x_out.detach().clone()
    got = _call(fn, where, x_in, x_out, norm=norm, forbidden=trsp_lib.method.losses.__file__)
    if not isinstance(got, torch.Tensor):
        raise _fail(fn, where, "a 0-dim torch.Tensor", f"{type(got).__name__} {got!r}",
                    "return a tensor, not a Python number (no .item()): stage 2 backpropagates the loss")
    if got.ndim != 0:
        raise _fail(fn, where, "a 0-dim tensor (one number)", f"a tensor of shape {tuple(got.shape)}",
                    "reduce to one number: the norm over the hidden dimension, then .mean() over batch and tokens")
    if not (torch.equal(x_in.detach(), saved[0]) and torch.equal(x_out.detach(), saved[1])):
        raise _fail(fn, where, "x_in and x_out left unchanged", "an input modified in place",
                    "do not modify x_in or x_out in place (e.g. x_out -= x_in): they are the model's activations")
    if not got.requires_grad:
        raise _fail(fn, where, "a loss with a gradient", "a tensor with requires_grad=False", _HINT_GRAPH)
    return got


def check_stage2_loss(fn: Callable, n_cases: int = 6, seed: int = 0, device: str = "cpu") -> None:
    """Grade ``stage2_loss(x_in, x_out, norm="l2")`` against ``identity_gap(x_out - x_in, norm)``:
    value and gradients on random inputs (both norms), 0 and a finite gradient for an identity layer."""
    g = torch.Generator().manual_seed(seed)
    for k in range(n_cases):
        norm = ("l2", "l1")[k % 2]
        shape = (int(torch.randint(2, 4, (), generator=g)), int(torch.randint(3, 9, (), generator=g)),
                 int(torch.randint(4, 17, (), generator=g)))
        base = torch.randn(shape, generator=g)
        delta = torch.randn(shape, generator=g) * float(torch.rand((), generator=g) * 2 + 0.1)
        x_in = base.clone().to(device).requires_grad_(True)  # two independent leaves
        x_out = (base + delta).to(device).requires_grad_(True)
        where = f"case {k + 1} of {n_cases}: x_in, x_out of shape {shape}, norm={norm!r}"
        got = _check_stage2_case(fn, x_in, x_out, norm, where)
        ref = identity_gap(x_out - x_in, norm)
        if not torch.allclose(got.detach().float(), ref.detach(), rtol=1e-5, atol=1e-6):
            d = (x_out - x_in).detach()
            raise _fail(fn, where, f"{ref.item():.6g}  (per-token {norm} norm of x_out - x_in, mean over tokens)",
                        f"{got.item():.6g}", _stage2_hint(d, norm, got))
        got_grads, ref_grads = _grad_of(got, x_in, x_out), _grad_of(ref, x_in, x_out)
        for name, gg, rg in zip(("x_in", "x_out"), got_grads, ref_grads):
            if gg is None:
                hint = _HINT_GRAPH if name == "x_out" else \
                    "do not detach x_in: X_in depends on the earlier layers' weights, which get this gradient too"
                raise _fail(fn, where, f"a gradient w.r.t. {name}", "no gradient", hint)
            if not torch.allclose(gg, rg, rtol=1e-4, atol=1e-6):
                raise _fail(fn, where, f"d loss / d {name} = {_head(rg)}", _head(gg),
                            "the value is right but the gradient is not: compute the loss with differentiable "
                            "torch ops on the tensors you were given, without detaching either of them")
    for k, norm in enumerate(("l2", "l1")):
        x_in = torch.randn(2, 5, 8, generator=g).to(device).requires_grad_(True)
        x_out = x_in.detach().clone().requires_grad_(True)
        where = f"an identity layer (x_out == x_in, shape (2, 5, 8)), norm={norm!r}"
        got = _check_stage2_case(fn, x_in, x_out, norm, where)
        if abs(got.item()) > 1e-6:
            raise _fail(fn, where, "0.0 (a layer that changes nothing costs nothing)", f"{got.item():.6g}",
                        "an identity layer must cost 0: compare x_out with x_in itself and add no epsilon "
                        "(sqrt(sum(d**2) + eps) adds sqrt(eps) per token, so the minimum is no longer 0)")
        grad = _grad_of(got, x_out)[0]
        if grad is not None and not torch.isfinite(grad).all():
            raise _fail(fn, where, "a finite gradient (0)", "NaN/inf in d loss / d x_out",
                        "torch.sqrt((d**2).sum(-1)) has an infinite derivative at 0 and gives NaN at an exact "
                        "identity layer, which would poison every weight; use d.norm(dim=-1) or "
                        "torch.linalg.vector_norm(d, dim=-1), whose gradient at 0 is defined as 0")
    print(f"✓ {_name(fn)} passed {n_cases + 2} cases: value and gradients match trsp_lib.method.losses.identity_gap "
          "(l2 and l1), and an identity layer costs exactly 0")



"""Checks for assignment 1 (the stage-2 loss), called by the notebook's nbgrader test cells.

Each check runs the student's function on fixed inputs and prints one line on success.  On failure it
raises AssertionError with the input, what was expected and what came back, and a hint naming the
usual mistake when the wrong answer matches one.  The right answers are not in this file: values are stored as hashes of their rounded logarithm.
Each test cell checks one property, so a near miss keeps the points of the properties it has.  While
the student's function runs, a profiler fails it if it calls a function of this file or any function of the library (trsp_lib), or
runs a copy of one.  The hidden tests are the teacher's and are not released.
"""
from __future__ import annotations

import dis
import hashlib
import importlib.util
import math
import os
import sys
import types
from pathlib import Path
from typing import Any, Callable

import torch


# ---- common to the three checks files (tests/test_assignments.py keeps them equal) ----------------

FILL_IN = ("fill in the function first: replace the `raise NotImplementedError` line with your code, "
           "then run that cell and this one again")
#: The study's library, found where it is installed (its modules are walked at run time, never named here).
LIBRARY = "trsp_lib"
#: Relative tolerance of the value checks and of the matching of the usual mistakes.
RTOL, MISTAKE_RTOL = 1e-4, 1e-4


def _name(fn: Callable) -> str:
    return getattr(fn, "__name__", "your function")


def _fail(fn: Callable, where: str, expected: Any, got: Any, hint: str) -> AssertionError:
    return AssertionError(f"{_name(fn)} is wrong on {where}\n  expected: {expected}\n  got:      {got}\n  hint: {hint}")


# ---- expected values: stored as salted hashes of their log-binned value, never as numbers ---------

def _digest(tag: str, k: int) -> str:
    return hashlib.sha256(f"trsp-classroom|{tag}|{k}".encode()).hexdigest()[:20]


def _bin(value: float, rtol: float) -> int:
    """The bin of a positive value on a log grid of step rtol / 4 (so +-4 bins is about +-rtol)."""
    return round(math.log(value) / math.log1p(rtol / 4))


def _agrees(tag: str, value: Any, digest: str, rtol: float) -> bool:
    """Whether `value` lies within about `rtol` (relative) of the value hashed into `digest`."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return False
    if not (math.isfinite(value) and value > 0):
        return False
    k = _bin(value, rtol)
    return any(_digest(tag, k + j) == digest for j in range(-4, 5))


def _mistake(tag: str, value: Any, mistakes: dict) -> str | None:
    """Which usual mistake (a key of `mistakes[tag]`) has the value `value` on the case `tag`, if any."""
    for key, digest in mistakes.get(tag, {}).items():
        if _agrees(f"{tag}|{key}", value, digest, MISTAKE_RTOL):
            return key
    return None


# ---- the guard: the student's function may not call this file or the library's answers, nor copies of them

_SKIP_OPS = {"CACHE", "NOP", "RESUME", "EXTENDED_ARG", "PRECALL", "COPY_FREE_VARS", "MAKE_CELL"}
_JUMPS = set(dis.hasjrel) | set(dis.hasjabs)


def _fingerprint(code: types.CodeType) -> tuple:
    """A function's bytecode with local names, comments, docstrings and positions left out."""
    ops = []
    for ins in dis.get_instructions(code):
        if ins.opname in _SKIP_OPS:
            continue
        if "FAST" in ins.opname or "DEREF" in ins.opname or ins.opname == "LOAD_CLOSURE":
            arg: Any = ins.arg
        elif ins.opcode in _JUMPS:
            arg = None
        elif isinstance(ins.argval, types.CodeType):
            arg = _fingerprint(ins.argval)
        else:
            arg = repr(ins.argval)
        ops.append((ins.opname, arg))
    return code.co_argcount, tuple(ops)


def _functions(path: Path) -> list[types.CodeType]:
    """Every function's code in a Python source file, compiled (not imported)."""
    try:
        todo = [compile(path.read_text(encoding="utf-8"), str(path), "exec")]
    except (OSError, SyntaxError, ValueError):
        return []
    out = []
    while todo:
        for const in todo.pop().co_consts:
            if isinstance(const, types.CodeType):
                out.append(const)
                todo.append(const)
    return out


def _guarded() -> tuple[str, dict, dict]:
    """(this file, {library file: module name}, {(file, line, name) or fingerprint: what it is}) for the
    library functions the student may neither call nor copy (`_forbidden_in_library` says which).

    Computed once per kernel and checks file (the test cells reload this file; the library is read again
    only if this file changed)."""
    own = os.path.realpath(__file__)
    cache = vars(sys.modules.setdefault("_trsp_checks_guard", types.ModuleType("_trsp_checks_guard")))
    stamp = (own, os.stat(own).st_mtime_ns)
    if stamp not in cache:
        cache[stamp] = _read_library(own)
    return cache[stamp]


def _read_library(own: str) -> tuple[str, dict, dict]:
    spec = importlib.util.find_spec(LIBRARY)
    roots = [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []
    modules, banned = {}, {}
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            module = ".".join((LIBRARY, *path.relative_to(root).with_suffix("").parts)).removesuffix(".__init__")
            modules[os.path.realpath(path)] = module
            for code in _functions(path):
                if _forbidden_in_library(code):
                    name = f"{module}.{code.co_name}"
                    banned[(os.path.realpath(path), code.co_firstlineno, code.co_name)] = name
                    if len(_fingerprint(code)[1]) >= 12:  # long enough that a match is a copy, not a coincidence
                        banned[_fingerprint(code)] = name
    return own, modules, banned


class _Forbidden(Exception):
    """Raised into the student's function at its first forbidden call."""


def _call(fn: Callable, where: str, *args, **kwargs) -> Any:
    """Call the student's function, turning NotImplementedError and crashes into a readable failure.

    While it runs, a profiler watches every Python function it calls: a function of this checks file,
    a library function that holds the answer, or a copy of one (same bytecode up to names and
    comments) fails the case, since the assignment is to write it."""
    own, modules, banned = _guarded()
    seen: dict = {}
    offence: list[str] = []
    user_code = (sys.prefix, sys.base_prefix)

    def watch(frame, event, arg):
        if event != "call" or offence:
            return
        code = frame.f_code
        if code not in seen:
            path = os.path.realpath(code.co_filename)
            what = None
            if path == own:
                what = f"{Path(own).stem}.{code.co_name}, a function of the checks file"
            elif path in modules:
                what = banned.get((path, code.co_firstlineno, code.co_name))
                what = what and f"the library's {what}"
            elif not path.startswith(user_code) and code.co_name not in ("<lambda>", "<genexpr>", "<listcomp>"):
                what = banned.get(_fingerprint(code))
                what = what and f"a copy of the library's {what}"
            seen[code] = what
        if seen[code]:
            offence.append(seen[code])
            raise _Forbidden(seen[code])  # stops the student's function at its first forbidden call

    previous = sys.getprofile()
    sys.setprofile(watch)
    try:
        result, error = fn(*args, **kwargs), None
    except Exception as err:  # judged below, with the profiler off
        result, error = None, err
    finally:
        sys.setprofile(previous)
    if offence:
        raise _fail(fn, where, "your own computation", f"a call of {offence[0]}",
                    "the assignment is to write this yourself; calling or copying the library's or the checks' "
                    "code earns no marks (if you wrote this code yourself, tell your teacher)")
    if isinstance(error, NotImplementedError):
        raise AssertionError(f"{_name(fn)} raised NotImplementedError: {FILL_IN}.") from None
    if error is not None:
        raise AssertionError(f"{_name(fn)} crashed on {where}: {type(error).__name__}: {error}") from error
    return result

# ---- end of the common part ----------------------------------------------------------------------


# ---- the stage-2 loss -----------------------------------------------------------------------------

def _forbidden_in_library(code: types.CodeType) -> bool:
    """Assignment 1 needs nothing from the library: calling or copying any of it earns no marks."""
    return True


_HINT_GRAPH = ("the result is not connected to the inputs' autograd graph: do not call .item(), .detach() or "
               "torch.tensor(...) on it and do not compute it under torch.no_grad(); stage 2 backpropagates it")
_HINT_GENERIC = ("compare your code with the definition in the assignment's introduction: a norm per token over "
                 "the hidden dimension, not squared, then the average over batch and tokens")
#: What the usual wrong losses mean; which one a wrong value is, is looked up by its hash (MISTAKES).
HINTS = {
    "frobenius": "this is ONE Frobenius norm of the whole [batch, tokens, hidden] tensor (what the released code does); "
                 "take the norm per token over the hidden dimension only (dim=-1), then the mean over batch and tokens, "
                 "so lambda2 does not depend on batch size or sequence length",
    "squared": "this is the SQUARED norm (an MSE-style penalty); TRSP uses the norm itself: a squared penalty's "
               "gradient fades as the layer nears identity, the plain norm keeps pushing",
    "mse": "this is the mean of squares over all elements (F.mse_loss): it squares the differences and averages "
           "over the hidden dimension too; use the unsquared vector norm over dim=-1, then the mean over tokens",
    "sum": "this is a SUM over batch and tokens; average them instead (.mean()), so the term does not grow "
           "with batch size or sequence length",
    "sum_tokens": "this sums over tokens (and averages over the batch); average over tokens too",
    "sum_batch": "this sums over the batch (and averages over tokens); average over the batch too",
    "mean_hidden": "this also averages over the hidden dimension: a token's norm runs over ALL hidden units "
                   "(l1 = sum of |d|, l2 = sqrt of the sum of squares); only batch and tokens are averaged",
    "other_norm": "this is the other norm: honour the `norm` argument ('l2' = Euclidean, 'l1' = sum of absolute "
                  "values, both over dim=-1)",
    "wrong_dim": "the norm runs over the wrong dimension (tokens, dim=1); inputs are [batch, tokens, hidden]: use dim=-1",
}

#: (shape, norm) of the cases whose value is checked; the inputs are value_inputs(k).
VALUE_CASES = (((2, 3, 4), "l2"), ((3, 5, 8), "l1"), ((2, 7, 16), "l2"), ((4, 2, 6), "l1"), ((3, 4, 5), "l2"), ((2, 6, 12), "l1"))

# BEGIN EXPECTED (written by classroom/teacher/expected.py from the reference solution; do not edit)
EXPECTED: dict = {
    'a1|0': 'bb3eecb7c3407d3f1f65',
    'a1|1': '71ae3bca2afab5b34feb',
    'a1|2': '94eea00435000fdde360',
    'a1|3': '438fc23812d3390d6630',
    'a1|4': '5e3fc39f31939f1290d2',
    'a1|5': '0fc835b0cd7e0236ba33',
}
MISTAKES: dict = {
    'a1|0': {
        'frobenius': 'a31ce74ee1c24e9fffa0',
        'squared': '0305dfc705565955485a',
        'mse': '2e1d24875ec28805fe5b',
        'sum': '374b3fe0578c917776ed',
        'sum_tokens': 'cb77026c951bbe74ae36',
        'sum_batch': '31539a5427f7f62f5c11',
        'mean_hidden': '0129b255b03ed1f612a1',
        'other_norm': '1191a4555ab19801fde8',
        'wrong_dim': '1e0caf5ba8f26a2b208d',
    },
    'a1|1': {
        'frobenius': '5f9cc8b15fc7f1a30ea6',
        'squared': '19fb04d58872519e0213',
        'mse': 'c7244431501098569575',
        'sum': '61bd74c9710d0930ced2',
        'sum_tokens': '37612c09d173012f57ba',
        'sum_batch': 'c154ca241f5838a1e503',
        'mean_hidden': 'ad46c3330776c49e05be',
        'other_norm': 'ba988b398c4a37abb4bb',
        'wrong_dim': 'c0e20839a7941267b8d4',
    },
    'a1|2': {
        'frobenius': '20aa924a1d9954b11765',
        'squared': '50909d0053372adbf965',
        'mse': '1e0699da7aca0a18d034',
        'sum': '5c06448ae832b9c5db90',
        'sum_tokens': '44e6f41727b22cdd5922',
        'sum_batch': '599ffc1de4b5f803dc80',
        'mean_hidden': '4f76099d151c87ca29fa',
        'other_norm': '8fbcbd433cf8ebaf25be',
        'wrong_dim': '3680a5a44eaa610a51ee',
    },
    'a1|3': {
        'frobenius': '0366c025ded5175b0d5c',
        'squared': '77a63deb459f5b38e6d1',
        'mse': 'abf53d575c4fe6c97451',
        'sum': 'efbb124a30d8b3e3b800',
        'sum_tokens': '54ce24ce7d0276aff143',
        'sum_batch': 'a5353c8d23d0a68b82fd',
        'mean_hidden': 'ac0630d5bda6b010d60c',
        'other_norm': '2174ce0a77508f488943',
        'wrong_dim': 'dd78923f713a74695ec5',
    },
    'a1|4': {
        'frobenius': '7d430315b17b0f566790',
        'squared': '61f8159f4442f9a41f16',
        'mse': 'd7912a7d4392e6b4face',
        'sum': 'b1c4a12596f5d17ab79c',
        'sum_tokens': 'e1feb68a93284b74d5a7',
        'sum_batch': '7fd6b4fe8cb4a058c10b',
        'mean_hidden': 'c2d24f4e6bbe92636119',
        'other_norm': '0053bbc9399e752e9ebe',
        'wrong_dim': '823f8fd415383bd3efb7',
    },
    'a1|5': {
        'frobenius': 'd1191169fc8ebc027de4',
        'squared': '031566be13c8fcaa5efe',
        'mse': 'db6d54ec3c51fbb71164',
        'sum': '33879a1fb42ca49e7cfc',
        'sum_tokens': '12aa1ebdef56e92c1ee4',
        'sum_batch': '8f81144e7b3a08484089',
        'mean_hidden': '5a0c21dbdb533e099ca6',
        'other_norm': 'dc0a6d95dd12dae240f0',
        'wrong_dim': '80265e269598ff93a59c',
    },
}
# END EXPECTED


def _grid(g: torch.Generator, shape: tuple, nonzero: bool = False) -> torch.Tensor:
    """Seeded values on a grid of 1/16 (exact in float32, the same on every machine)."""
    if not nonzero:
        return torch.randint(-64, 65, shape, generator=g).float() / 16
    sign = torch.randint(0, 2, shape, generator=g).float() * 2 - 1
    return sign * torch.randint(1, 65, shape, generator=g).float() / 16


def value_inputs(k: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """x_in, x_out (no gradient) and the norm of value case k."""
    shape, norm = VALUE_CASES[k]
    g = torch.Generator().manual_seed(1000 + k)
    x_in = _grid(g, shape)
    return x_in, x_in + _grid(g, shape) * (k + 1) / 2, norm


def _leaves(*xs: torch.Tensor) -> list[torch.Tensor]:
    return [x.detach().clone().requires_grad_(True) for x in xs]


def _as_loss(fn: Callable, got: Any, where: str) -> torch.Tensor:
    if not isinstance(got, torch.Tensor):
        raise _fail(fn, where, "a 0-dim torch.Tensor", f"{type(got).__name__} {got!r}",
                    "return a tensor, not a Python number (no .item()): stage 2 backpropagates the loss")
    if got.ndim != 0:
        raise _fail(fn, where, "a 0-dim tensor (one number)", f"a tensor of shape {tuple(got.shape)}",
                    "reduce to one number: the norm over the hidden dimension, then .mean() over batch and tokens")
    return got


def _run(fn: Callable, x_in: torch.Tensor, x_out: torch.Tensor, norm: str, where: str) -> torch.Tensor:
    return _as_loss(fn, _call(fn, where, x_in, x_out, norm=norm), where)


def check_type(fn: Callable) -> None:
    """A 0-dim float tensor in the autograd graph, for both norms, with the inputs left unchanged."""
    for k in (0, 1):
        x_in, x_out, norm = value_inputs(k)
        x_in, x_out = _leaves(x_in, x_out)
        saved = x_in.detach().clone(), x_out.detach().clone()
        where = f"x_in, x_out of shape {tuple(x_in.shape)}, norm={norm!r}"
        got = _run(fn, x_in, x_out, norm, where)
        if not got.is_floating_point():
            raise _fail(fn, where, "a float tensor", f"dtype {got.dtype}", "keep the loss a float tensor")
        if not (torch.equal(x_in.detach(), saved[0]) and torch.equal(x_out.detach(), saved[1])):
            raise _fail(fn, where, "x_in and x_out left unchanged", "an input modified in place",
                        "do not modify x_in or x_out in place (e.g. x_out -= x_in): they are the model's activations")
        if not got.requires_grad:
            raise _fail(fn, where, "a loss with a gradient", "a tensor with requires_grad=False", _HINT_GRAPH)
    print(f"✓ {_name(fn)} returns a 0-dim tensor in the autograd graph (l2 and l1) and leaves its inputs alone")


def check_values(fn: Callable) -> None:
    """The value on fixed inputs (both norms), compared with hashes of the right values."""
    for k in range(len(VALUE_CASES)):
        x_in, x_out, norm = value_inputs(k)
        where = f"value case {k + 1} of {len(VALUE_CASES)}: x_in, x_out of shape {tuple(x_in.shape)} (value_inputs({k})), norm={norm!r}"
        got = _run(fn, x_in, x_out, norm, where).detach()
        if not _agrees(f"a1|{k}", got, EXPECTED[f"a1|{k}"], RTOL):
            mistake = _mistake(f"a1|{k}", got, MISTAKES)
            raise _fail(fn, where, f"the per-token {norm} norm of x_out - x_in, averaged over batch and tokens "
                        f"(to {RTOL:.0e} relative)", f"{got.item():.6g}", HINTS[mistake] if mistake else _HINT_GENERIC)
    print(f"✓ {_name(fn)} has the right value on {len(VALUE_CASES)} inputs (l2 and l1)")


def _directional(fn: Callable, x_in: torch.Tensor, x_out: torch.Tensor, norm: str, which: int, v: torch.Tensor,
                 h: float, where: str) -> float:
    """(f(x + h v) - f(x - h v)) / 2h with x the input number `which`: the student's own function's slope."""
    def at(t):
        xs = [x_in.detach().clone(), x_out.detach().clone()]
        xs[which] = xs[which] + t * v
        return float(_run(fn, xs[0], xs[1], norm, where).detach())
    return (at(h) - at(-h)) / (2 * h)


def check_gradient(fn: Callable) -> None:
    """The autograd gradient w.r.t. both inputs agrees with finite differences of the function itself."""
    for k in (2, 3):
        x_in, x_out, norm = value_inputs(k)
        x_in, x_out = _leaves(x_in, x_out)
        where = f"gradient on x_in, x_out of shape {tuple(x_in.shape)}, norm={norm!r}"
        got = _run(fn, x_in, x_out, norm, where)
        if not got.requires_grad:
            raise _fail(fn, where, "a loss with a gradient", "a tensor with requires_grad=False", _HINT_GRAPH)
        grads = torch.autograd.grad(got, (x_in, x_out), allow_unused=True)
        g = torch.Generator().manual_seed(7 + k)
        for which, name in enumerate(("x_in", "x_out")):
            if grads[which] is None or not grads[which].abs().sum() > 0:
                hint = _HINT_GRAPH if name == "x_out" else \
                    "do not detach x_in: X_in depends on the earlier layers' weights, which get this gradient too"
                raise _fail(fn, where, f"a non-zero gradient w.r.t. {name}", "none", hint)
            v = _grid(g, tuple(x_in.shape))
            slope = _directional(fn, x_in, x_out, norm, which, v, 1e-2, where)
            auto = float((grads[which] * v).sum())
            if abs(auto - slope) > 0.02 * abs(slope) + 1e-3:
                raise _fail(fn, where, f"d loss / d {name} along a direction = {slope:.5g} (finite differences "
                            "of your own function)", f"{auto:.5g} (autograd)",
                            "the value and its autograd gradient disagree: compute the loss with differentiable "
                            "torch ops on the tensors you were given, without detaching either of them")
    print(f"✓ {_name(fn)} backpropagates to x_in and x_out (autograd agrees with finite differences)")


def check_identity(fn: Callable) -> None:
    """An identity layer (x_out == x_in) costs exactly 0, with a finite gradient."""
    g = torch.Generator().manual_seed(5)
    for norm in ("l2", "l1"):
        x_in = _grid(g, (2, 5, 8)).requires_grad_(True)
        x_out = x_in.detach().clone().requires_grad_(True)
        where = f"an identity layer (x_out == x_in, shape (2, 5, 8)), norm={norm!r}"
        got = _run(fn, x_in, x_out, norm, where)
        if abs(got.item()) > 1e-6:
            raise _fail(fn, where, "0.0 (a layer that changes nothing costs nothing)", f"{got.item():.6g}",
                        "an identity layer must cost 0: compare x_out with x_in itself and add no epsilon "
                        "(sqrt(sum(d**2) + eps) adds sqrt(eps) per token, so the minimum is no longer 0)")
        if not got.requires_grad:
            raise _fail(fn, where, "a loss with a gradient", "a tensor with requires_grad=False", _HINT_GRAPH)
        (grad,) = torch.autograd.grad(got, (x_out,), allow_unused=True)
        if grad is not None and not torch.isfinite(grad).all():
            raise _fail(fn, where, "a finite gradient (0)", "NaN/inf in d loss / d x_out",
                        "the square root of a sum of squares has an infinite derivative at 0 and gives NaN at an "
                        "exact identity layer, which would poison every weight; torch's own vector norm defines "
                        "its gradient at 0 as 0")
    print(f"✓ {_name(fn)} gives an identity layer a loss of exactly 0 with a finite gradient")


def check_hidden(fn: Callable, reference: Callable, seed: int, n_cases: int = 8) -> None:
    """The grader's own cases: value and gradients against `reference` (supplied by the hidden test cell)
    on new shapes (one sample, one token, wide), scales, dtypes and a chained graph."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(1, 1, 3), (1, 9, 4), (5, 1, 7), (2, 3, 64)] + \
        [tuple(int(torch.randint(1, n, (), generator=g)) for n in (5, 12, 40)) for _ in range(n_cases - 4)]
    for k, shape in enumerate(shapes):
        norm = ("l2", "l1")[k % 2]
        dtype = torch.float64 if k % 3 == 2 else torch.float32
        scale = (1e-3, 1.0, 1e3)[k % 3]
        base = (_grid(g, shape) * scale).to(dtype).requires_grad_(True)
        x_in = base * 2                      # earlier weights feed both: neither input is a leaf
        x_out = base * 3 + _grid(g, shape, nonzero=True).to(dtype) * scale
        where = f"hidden case {k + 1} of {len(shapes)}: shape {shape}, {dtype}, scale {scale:g}, norm={norm!r}"
        got = _run(fn, x_in, x_out, norm, where)
        ref = reference(x_in, x_out, norm)
        if not torch.allclose(got.detach().double(), ref.detach().double(), rtol=1e-4, atol=0):
            raise _fail(fn, where, f"{ref.item():.6g}", f"{got.item():.6g}", _HINT_GENERIC)
        if not got.requires_grad:
            raise _fail(fn, where, "a loss with a gradient", "a tensor with requires_grad=False", _HINT_GRAPH)
        (mine,) = torch.autograd.grad(got, (base,), allow_unused=True, retain_graph=True)
        (right,) = torch.autograd.grad(ref, (base,))
        if mine is None or not torch.allclose(mine.double(), right.double(), rtol=1e-3, atol=1e-7):
            raise _fail(fn, where, "the gradient w.r.t. the weights before the layer", "a different gradient",
                        "both x_in and x_out depend on earlier weights: keep both in the graph (no .detach())")
    print(f"✓ {_name(fn)} passed {len(shapes)} hidden cases")

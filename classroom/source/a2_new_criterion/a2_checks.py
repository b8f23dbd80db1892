"""Checks for assignment 2 (a layer-importance criterion), called by the notebook's nbgrader test cells.

Each check runs the student's function on fixed inputs and prints one line on success.  On failure it
raises AssertionError with the input, what was expected and what came back, and a hint naming the
usual mistake when the wrong answer matches one.  The right answers are not in this file: the checks are properties (a valid, deterministic choice that leaves the model alone and removes an identity layer first).
Each test cell checks one property, so a near miss keeps the points of the properties it has.  While
the student's function runs, a profiler fails it if it calls a function of this file or a ready-made criterion or layer score of the library (trsp_lib), or
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
from torch import nn

from trsp_lib.surgery.adapters import get_adapter, get_layers, scale_branch_output
from trsp_lib.models import tiny_model


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


# ---- an importance criterion ----------------------------------------------------------------------

#: The library's helpers a criterion may use: they capture activations and compute losses, and choose nothing.
HELPERS = ("captured_io", "layer_io", "calib_loss", "last_hidden")


def _forbidden_in_library(code: types.CodeType) -> bool:
    """The library's ready-made criteria and layer scores (its functions of (model, calib, ...) other
    than the HELPERS): the assignment is a criterion of your own."""
    return code.co_varnames[:2] == ("model", "calib") and code.co_name not in HELPERS


#: (n_layers, model seed, n to remove, layer made an exact identity)
CRITERION_CASES = ((4, 0, 2, 1), (6, 1, 2, 3), (8, 2, 3, 5))


def _hook_count(model: nn.Module) -> int:
    names = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    return sum(len(getattr(m, a, {})) for m in model.modules() for a in names)


@torch.no_grad()
def _logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """The logits in eval mode (no dropout), the model's mode restored."""
    was_training = model.training
    model.eval()
    try:
        return model(input_ids=ids, use_cache=False).logits.float()
    finally:
        model.train(was_training)


def _snapshot(model: nn.Module, ids: torch.Tensor) -> dict:
    return {"classes": [type(layer).__name__ for layer in get_layers(model)], "hooks": _hook_count(model),
            "training": model.training, "logits": _logits(model, ids)}


def _check_untouched(fn: Callable, model: nn.Module, ids: torch.Tensor, before: dict, where: str) -> None:
    """The model must come back as it went in: same layers, no hooks, same mode, same logits, no grads."""
    classes = [type(layer).__name__ for layer in get_layers(model)]
    if classes != before["classes"]:
        raise _fail(fn, where, f"decoder layers {before['classes']}", f"{classes}",
                    "your criterion left wrappers on the layers (e.g. GatedLayer); if you call attach_gates, call "
                    "detach_gates(model, gating, fold=False) in a `finally:` block (as captured_io does)")
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
                    "and take the first n")
    if len(got) != n:
        raise _fail(fn, where, f"exactly n = {n} layers", f"{len(got)}: {got}", "return exactly n indices ([:n])")
    out = [i for i in got if not 0 <= i < n_layers]
    if out:
        raise _fail(fn, where, f"indices in 0..{n_layers - 1}", f"{got}", f"{out} out of range: indices are 0-based")
    return got


def _case(k: int, case: tuple, arch: str = "llama", calib_shape: tuple = (4, 16), train: bool = False, device: str = "cpu"):
    n_layers, seed, n = case[:3]
    model = tiny_model(arch, n_layers=n_layers, seed=seed).to(device)
    model.train(train)
    g = torch.Generator().manual_seed(seed)
    calib = torch.randint(1, 100, calib_shape, generator=g).to(device)
    ids = torch.randint(1, 100, (2, 8), generator=g).to(device)
    where = (f"case {k + 1}: tiny {arch} with {n_layers} layers (seed {seed}), calib {tuple(calib.shape)}, n={n}"
             + (", model in train mode" if train else ""))
    return model, calib, ids, where


def _choose(fn: Callable, model: nn.Module, calib: torch.Tensor, ids: torch.Tensor, n: int, where: str) -> list[int]:
    """One call: the model left as found, then a valid choice."""
    before = _snapshot(model, ids)
    got = _call(fn, where, model, calib, n)
    _check_untouched(fn, model, ids, before, where)
    return _check_choice(fn, got, len(get_layers(model)), n, where)


def check_contract(fn: Callable, device: str = "cpu") -> None:
    """n distinct Python ints in 0..L-1, and the same answer on a second call."""
    model, calib, ids, where = _case(0, CRITERION_CASES[0], device=device)
    n = CRITERION_CASES[0][2]
    first = _check_choice(fn, _call(fn, where, model, calib, n), len(get_layers(model)), n, where)
    second = _check_choice(fn, _call(fn, where + " (second call)", model, calib, n), len(get_layers(model)), n, where)
    if second != first:
        raise _fail(fn, where, f"the same layers on a second call: {first}", f"{second}",
                    "two calls on the same model and data disagree: seed any randomness and do not keep "
                    "state between calls")
    print(f"✓ {_name(fn)} returns n distinct valid layer indices, the same on a second call")


def check_untouched(fn: Callable, device: str = "cpu") -> None:
    """The model comes back as it went in (layers, hooks, train/eval mode, logits, no .grad), in both modes."""
    for train in (False, True):
        model, calib, ids, where = _case(1, CRITERION_CASES[1], train=train, device=device)
        _choose(fn, model, calib, ids, CRITERION_CASES[1][2], where)
    print(f"✓ {_name(fn)} leaves the model as it found it (layers, hooks, mode, logits, gradients)")


def check_identity(fn: Callable, cases: tuple = CRITERION_CASES, device: str = "cpu") -> None:
    """A layer made an exact identity (its residual branches output 0) is picked first."""
    for k, case in enumerate(cases):
        model, calib, ids, where = _case(k, case, device=device)
        identities = case[3:]
        for i in identities:
            scale_branch_output(get_layers(model)[i], get_adapter(model), 0.0)  # X_out == X_in exactly
        where = f"{where}, layer(s) {list(identities)} made exact identities (their residual branches output 0)"
        picked = _choose(fn, model, calib, ids, case[2], where)
        if sorted(picked[:len(identities)]) != sorted(identities):
            raise _fail(fn, where, f"layer(s) {sorted(identities)} first", f"{picked}",
                        "a layer with X_out == X_in changes nothing, so it must be the first to go: score layers by "
                        "how much they change their input (e.g. 1 - cos(X_in, X_out) is 0 there) and return them "
                        "least important first (ascending score); a rule by position alone cannot see this")
    print(f"✓ {_name(fn)} picks the identity layer first in {len(cases)} cases")


def check_hidden(fn: Callable, cases: tuple, device: str = "cpu") -> None:
    """The grader's cases, each (arch, calib shape, train mode, (n_layers, seed, n, *identity layers)):
    other architectures, calibration shapes and modes, several identity layers."""
    for k, (arch, calib_shape, train, case) in enumerate(cases):
        model, calib, ids, where = _case(k, case, arch=arch, calib_shape=calib_shape, train=train, device=device)
        for i in case[3:]:
            scale_branch_output(get_layers(model)[i], get_adapter(model), 0.0)
        picked = _choose(fn, model, calib, ids, case[2], where + f", identity layer(s) {list(case[3:])}")
        if sorted(picked[:len(case) - 3]) != sorted(case[3:]):
            raise _fail(fn, where, f"layer(s) {sorted(case[3:])} first", f"{picked}",
                        "layers with X_out == X_in must be the first to go")
    print(f"✓ {_name(fn)} passed {len(cases)} hidden cases")

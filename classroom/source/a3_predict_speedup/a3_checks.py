"""Checks for assignment 3 (predict the speed-up), called by the notebook's nbgrader test cells.

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


# ---- the ideal speed-up ---------------------------------------------------------------------------

def _forbidden_in_library(code: types.CodeType) -> bool:
    """Assignment 3 is a formula: calling or copying any of the library (its FLOP counter included) earns no marks."""
    return True


KEYS = ("n_layers", "n_removed", "hidden", "vocab", "seq_len", "intermediate")
#: Fixed model shapes (KEYS) whose speed-up is checked: ones where the usual mistakes are far off.
VALUE_CASES = ((8, 2, 32, 2048, 128, 64), (12, 3, 64, 1024, 1024, 256), (30, 8, 64, 8192, 256, 192),
               (6, 1, 48, 256, 64, 144), (16, 10, 32, 1000, 512, 128), (8, 4, 32, 4096, 16, 512))
#: What each part of a wrong formula means; the parts of a wrong value are looked up by its hash (MISTAKES).
HINTS = {
    "inverted": "the speed-up is dense FLOPs / pruned FLOPs (> 1), not pruned / dense",
    "lm_head=0": "the LM head runs whatever you remove, so the ratio is below n_layers / (n_layers - n_removed): "
                 "count it in both the dense and the pruned FLOPs",
    "lm_head=2": "the embedding lookup is a gather and costs no multiply-adds: count the LM head once, not twice",
    "attention=none": "include attention's scores QK^T and weighted sum AV: multiply-adds that are removed with "
                      "the layers and grow with the square of the sequence length",
    "attention=full": "attention is causal: token t attends to t+1 positions, not to all seq_len of them",
    "mlp=2": "a Llama MLP has three matrices (gate_proj, up_proj, down_proj), not two",
}
_HINT_GENERIC = ("count the multiply-adds (2 FLOPs each) of every matrix product of a forward pass, as the "
                 "assignment's introduction lists them; norms and the embedding lookup are negligible or free")

# BEGIN EXPECTED (written by classroom/teacher/expected.py from the library's FLOP count; do not edit)
EXPECTED: dict = {
    'a3|0': '366e3dfd83155ee7cbe4',
    'a3|1': 'e2f30d62f4de837330bd',
    'a3|2': '1d790d5af1e98bcc6891',
    'a3|3': 'a75a98ed839fb5e98175',
    'a3|4': '74059a27839fe47020af',
    'a3|5': '1fe8276694dbe19a48f4',
}
MISTAKES: dict = {
    'a3|0': {
        'inverted': 'b93d7e3514917c168687',
        'mlp=2': '3c3a74feb4a60b62d55a',
        'inverted,mlp=2': '2b5ceb77772df0d5be02',
        'lm_head=0': '666a92b8f7ba5071ec0f',
        'inverted,lm_head=0': 'e13fb941433105c78eb3',
        'lm_head=0,mlp=2': '44369b0a9fa8b16046ac',
        'inverted,lm_head=0,mlp=2': '1b58ac08232cf544561a',
        'lm_head=2': 'd2778d7783cc3bbc939a',
        'inverted,lm_head=2': '4f57de985ca7ed6395c4',
        'lm_head=2,mlp=2': '3cc2f38e17120225c2eb',
        'inverted,lm_head=2,mlp=2': '6897f812f2ed2ae5c4e9',
        'attention=none': '126d23c07aa6bed22421',
        'inverted,attention=none': '6c038ac87ad5c8d7daed',
        'attention=none,mlp=2': '17c8b9a9ed563cfe2c4a',
        'inverted,attention=none,mlp=2': '33ffba8b27c59da3dd54',
        'attention=none,lm_head=0': 'b1cec9aa16f2b12bec47',
        'inverted,attention=none,lm_head=0': 'd7a89efcf2d82d764056',
        'attention=none,lm_head=0,mlp=2': '3666ed74443f6f35580e',
        'inverted,attention=none,lm_head=0,mlp=2': '8f909ec5b88a6baf2707',
        'attention=none,lm_head=2': '80d2bed6fdf4f5393378',
        'inverted,attention=none,lm_head=2': 'f3806861244f28ccd502',
        'attention=none,lm_head=2,mlp=2': '42b54a8b67c2954c9350',
        'inverted,attention=none,lm_head=2,mlp=2': '3e93df407d60de5c2a12',
        'attention=full': 'b894b9bf761673f2f80e',
        'inverted,attention=full': 'cd3f900169338f9aca30',
        'attention=full,mlp=2': '35c807bb14561e56b04a',
        'inverted,attention=full,mlp=2': '6f8206f89d5036680d0a',
        'attention=full,lm_head=0': '088ec23d527d6823f2a6',
        'inverted,attention=full,lm_head=0': '04d4afb4f0ef07a76a71',
        'attention=full,lm_head=0,mlp=2': '40c42633c1cb708b3de0',
        'inverted,attention=full,lm_head=0,mlp=2': '349ec5544b73cf2ebaad',
        'attention=full,lm_head=2': '46212f99eaa371669bc3',
        'inverted,attention=full,lm_head=2': 'fb3967b3d5bd66651304',
        'attention=full,lm_head=2,mlp=2': '258ec12fcc7f9822c1a4',
        'inverted,attention=full,lm_head=2,mlp=2': 'e3940eecfe52cf202a9a',
    },
    'a3|1': {
        'inverted': '7870f96392111a134d2e',
        'mlp=2': '62129f8798eaf81c0966',
        'inverted,mlp=2': '1e03959fd281f4191e83',
        'lm_head=0': '0d3140a6969eac1b4dc1',
        'inverted,lm_head=0': 'b773446ca61568ad97d6',
        'lm_head=0,mlp=2': '0597d972ad464c498e06',
        'inverted,lm_head=0,mlp=2': '299431c2a83339ef3a55',
        'lm_head=2': '423018735c6f449c4d29',
        'inverted,lm_head=2': '637b5a1dd3c80715ea10',
        'lm_head=2,mlp=2': 'e074227dfc60a89c2583',
        'inverted,lm_head=2,mlp=2': 'b5a5f886782244aad46d',
        'attention=none': '8f4f9a2565e699488cbf',
        'inverted,attention=none': '9e17bb168c1abdfd2a5c',
        'attention=none,mlp=2': '1c9b9e60758a826e9188',
        'inverted,attention=none,mlp=2': '40098bffea92ce5bff36',
        'attention=none,lm_head=0': '87ff79be9b8d14d8d9b2',
        'inverted,attention=none,lm_head=0': 'f6784cde8962ea6b5431',
        'attention=none,lm_head=0,mlp=2': '5e32d32a2086fc64d47b',
        'inverted,attention=none,lm_head=0,mlp=2': '24bcd24dafa864e3998c',
        'attention=none,lm_head=2': '582a9e34ddedc86b4e4e',
        'inverted,attention=none,lm_head=2': 'f62148f2cd7068f25713',
        'attention=none,lm_head=2,mlp=2': 'd817be997c7c185e3305',
        'inverted,attention=none,lm_head=2,mlp=2': '12e091ecaee11179e171',
        'attention=full': '38eba15bd258e3557cee',
        'inverted,attention=full': '200bfcc18da42db1ab2b',
        'attention=full,mlp=2': 'a050399f3c07969b00f8',
        'inverted,attention=full,mlp=2': 'f80397fed3c002de3230',
        'attention=full,lm_head=0': 'd42be00916b292c3b2ba',
        'inverted,attention=full,lm_head=0': '5f87820fcbca7b9e4349',
        'attention=full,lm_head=0,mlp=2': 'a046b087f5b8fc3bf205',
        'inverted,attention=full,lm_head=0,mlp=2': 'f33e21fe4f2c77b0e2ba',
        'attention=full,lm_head=2': '40ce5651bd65d2a0c8a8',
        'inverted,attention=full,lm_head=2': 'db1d9b46b94e08b64266',
        'attention=full,lm_head=2,mlp=2': '14b67e4769f706007b5c',
        'inverted,attention=full,lm_head=2,mlp=2': '9b83dcbca6fa2272a1ac',
    },
    'a3|2': {
        'inverted': '222a69d70e389be59982',
        'mlp=2': '0b6841e5d95a68c4ba3e',
        'inverted,mlp=2': 'f24abb24b4307a523225',
        'lm_head=0': 'e2ec13aebf6d301a8ce7',
        'inverted,lm_head=0': '39103389e51561418d2b',
        'lm_head=0,mlp=2': 'd8bc9009ffbf4448c0ea',
        'inverted,lm_head=0,mlp=2': '217f662505d013c772c5',
        'lm_head=2': '27391f15d02f156c4d54',
        'inverted,lm_head=2': '9c3937dd9b3da2bec66c',
        'lm_head=2,mlp=2': '987d4171f569172a7ae5',
        'inverted,lm_head=2,mlp=2': '2c0e2fcbae8d09001394',
        'attention=none': '0554f79d5c88fffe5e87',
        'inverted,attention=none': '5b1365c05ae16b279c0f',
        'attention=none,mlp=2': '09da93bef7d5ea5cc6d5',
        'inverted,attention=none,mlp=2': 'c785a7843876fee8069a',
        'attention=none,lm_head=0': 'fececdd74f0d324f590a',
        'inverted,attention=none,lm_head=0': 'e95371683e2b1e49f909',
        'attention=none,lm_head=0,mlp=2': 'dd1b060eaa43b7a8503d',
        'inverted,attention=none,lm_head=0,mlp=2': 'dd94cea6cd2691a1d27e',
        'attention=none,lm_head=2': '6f9f9c21a8608dbcf0d6',
        'inverted,attention=none,lm_head=2': 'f37ef2f32ee47210c572',
        'attention=none,lm_head=2,mlp=2': '9b83c2ea2068d75331ca',
        'inverted,attention=none,lm_head=2,mlp=2': 'd4246c16db122dc4bbc7',
        'attention=full': 'e36c77feaeb3476b2676',
        'inverted,attention=full': '7cf03ddbc51608f91d37',
        'attention=full,mlp=2': 'dd787fcf8bd6418cda67',
        'inverted,attention=full,mlp=2': 'b4f6e76d669a828ffa32',
        'attention=full,lm_head=0': '2b0aa1dd8ae4cc3fe4b4',
        'inverted,attention=full,lm_head=0': 'ae2585f732f23b228fd9',
        'attention=full,lm_head=0,mlp=2': '4352dd6420a46184df66',
        'inverted,attention=full,lm_head=0,mlp=2': 'a34209b20facd946e2f3',
        'attention=full,lm_head=2': 'fa844d20b24e2802bc63',
        'inverted,attention=full,lm_head=2': 'b21b36ed155637f662f7',
        'attention=full,lm_head=2,mlp=2': '362504595c82a1473b28',
        'inverted,attention=full,lm_head=2,mlp=2': '9eae46e7aaa81589a8e2',
    },
    'a3|3': {
        'inverted': '54ae00c36a401bcfe62b',
        'mlp=2': '9db4c2b248b7f4c1e139',
        'inverted,mlp=2': '72294ad9b4c083d14903',
        'lm_head=0': '38d7545163937f8634a6',
        'inverted,lm_head=0': '9ee4412b3a3234a4dc4e',
        'lm_head=0,mlp=2': '8eb00e7c6dc30cc31d0b',
        'inverted,lm_head=0,mlp=2': '09fa3e7464800e0f4349',
        'lm_head=2': '08adb9c7fbf6beba94a9',
        'inverted,lm_head=2': 'a017109e531c8752918a',
        'lm_head=2,mlp=2': '22ae25ae0838c9d51580',
        'inverted,lm_head=2,mlp=2': 'ba24b34f7202e26165e3',
        'attention=none': '3ac515b4aa25a557fb48',
        'inverted,attention=none': '8ef60e268efb92bc3d7f',
        'attention=none,mlp=2': 'ab0e07585b02c112e9d1',
        'inverted,attention=none,mlp=2': '1f4a70a84d69f8087de8',
        'attention=none,lm_head=0': '82d508bd9ac286af251e',
        'inverted,attention=none,lm_head=0': '5c49eeba797779a3cd6f',
        'attention=none,lm_head=0,mlp=2': 'ff21fd75c01bdc4a6c19',
        'inverted,attention=none,lm_head=0,mlp=2': '3afd4e4a5ff66a14509c',
        'attention=none,lm_head=2': 'e5a0fa55437a640f7db2',
        'inverted,attention=none,lm_head=2': '2583a883e52d2eec32a1',
        'attention=none,lm_head=2,mlp=2': 'da5b682c2422f9047451',
        'inverted,attention=none,lm_head=2,mlp=2': '3f469e1a3b34ed0fff5a',
        'attention=full': '5f2581b6a792056fa871',
        'inverted,attention=full': 'd0b9671611d1f5e53168',
        'attention=full,mlp=2': '89e5832477ba00720a73',
        'inverted,attention=full,mlp=2': '25825cb7918c07a540a4',
        'attention=full,lm_head=0': 'd5cfd747d7601418eeb9',
        'inverted,attention=full,lm_head=0': 'e02650dc2df60a32ef06',
        'attention=full,lm_head=0,mlp=2': '07a82fe69a38efadf55c',
        'inverted,attention=full,lm_head=0,mlp=2': '0cc10e8d993a5404b6b7',
        'attention=full,lm_head=2': 'fa03a56a29796d2561fb',
        'inverted,attention=full,lm_head=2': 'd6fdd3f1dc716c31058e',
        'attention=full,lm_head=2,mlp=2': '5e0fe20a52b351c2f5a7',
        'inverted,attention=full,lm_head=2,mlp=2': '6c2f9288cfae11fbf223',
    },
    'a3|4': {
        'inverted': '5ce60bbd25ab4b2d5132',
        'mlp=2': 'fee87659e18177f383ed',
        'inverted,mlp=2': '900a014e1a8b2da69d94',
        'lm_head=0': '6d0001cd00ff851ae643',
        'inverted,lm_head=0': 'e70ffabc293c1bc66b39',
        'lm_head=0,mlp=2': '80aca60a64cad1dd029c',
        'inverted,lm_head=0,mlp=2': '34647bc39c73173fbeb9',
        'lm_head=2': '5ac9be7e5dbec9e43c9b',
        'inverted,lm_head=2': '371a4c576a3cebd3f0d3',
        'lm_head=2,mlp=2': '18c4b9899844b15d2fbb',
        'inverted,lm_head=2,mlp=2': '0c98983569cb3cd3f52e',
        'attention=none': '2ad4fa66b79ad3569309',
        'inverted,attention=none': '2447f41868e1f9168803',
        'attention=none,mlp=2': 'b240289022549dc7bc93',
        'inverted,attention=none,mlp=2': '98ead8c2aec1d8b06d1c',
        'attention=none,lm_head=0': '688adae540f12f403707',
        'inverted,attention=none,lm_head=0': 'b7e6caeb8d0f3e2f58a0',
        'attention=none,lm_head=0,mlp=2': '54da52f72264b87ca032',
        'inverted,attention=none,lm_head=0,mlp=2': 'e896469b176da101f910',
        'attention=none,lm_head=2': '8715e48297bcb35368c3',
        'inverted,attention=none,lm_head=2': 'fc1b5bb008f2bcbdccd2',
        'attention=none,lm_head=2,mlp=2': 'af5e00655c48804e6434',
        'inverted,attention=none,lm_head=2,mlp=2': '3fa25a58922c7eeb3f35',
        'attention=full': '9dbf3f46145aecbc76fb',
        'inverted,attention=full': '76decdda589584861698',
        'attention=full,mlp=2': '674c9c0da4c7e4cc671d',
        'inverted,attention=full,mlp=2': '82cb3fafd9e7e787f9dd',
        'attention=full,lm_head=0': '3eb3659916f3b9928827',
        'inverted,attention=full,lm_head=0': 'bd3d66e36c954498c382',
        'attention=full,lm_head=0,mlp=2': 'b0f01af776599b935705',
        'inverted,attention=full,lm_head=0,mlp=2': 'f0df4b1d348d2137d741',
        'attention=full,lm_head=2': '1c0ca4cda32b0a9c1e47',
        'inverted,attention=full,lm_head=2': '76bd0d701a267c1225b8',
        'attention=full,lm_head=2,mlp=2': '2232217874ab12456149',
        'inverted,attention=full,lm_head=2,mlp=2': '5300c6515a23e1b3bc98',
    },
    'a3|5': {
        'inverted': 'd7270a55d748aebcc2f4',
        'mlp=2': '017218b2a36b48285673',
        'inverted,mlp=2': '272cfe8d3aab27d49707',
        'lm_head=0': '2c87d00b7b56f6960e78',
        'inverted,lm_head=0': '333bb33ef1e2fb05693c',
        'lm_head=0,mlp=2': 'b8694200523086afea21',
        'inverted,lm_head=0,mlp=2': '898d04446908a155dae6',
        'lm_head=2': '4a23db897a03da703811',
        'inverted,lm_head=2': '35d208e3cce75b101538',
        'lm_head=2,mlp=2': '4c2b2caa4682943957fe',
        'inverted,lm_head=2,mlp=2': '9c5756b1e6c189c14486',
        'attention=none': '642c6a45509c8c178d87',
        'inverted,attention=none': 'afdf52c0be6176c7c38d',
        'attention=none,mlp=2': '77c75e9dae7c2b34c3ac',
        'inverted,attention=none,mlp=2': '99d66be55536f42c5d1b',
        'attention=none,lm_head=0': '7fd0ede479cd04e99b0c',
        'inverted,attention=none,lm_head=0': 'a045f53ec85ae71214e3',
        'attention=none,lm_head=0,mlp=2': 'bda568c60d7c15eccca1',
        'inverted,attention=none,lm_head=0,mlp=2': '33cd2514e0414b5c2fb8',
        'attention=none,lm_head=2': '4ee6d733679ab4228e3f',
        'inverted,attention=none,lm_head=2': '21740fde7907ba663b44',
        'attention=none,lm_head=2,mlp=2': '6f0d76f243b9b6079525',
        'inverted,attention=none,lm_head=2,mlp=2': '64565c604bf4136e7653',
        'attention=full': 'f27beddc490f87275d7c',
        'inverted,attention=full': '56d8dfb4530bc59700d3',
        'attention=full,mlp=2': '49eeee1093abbe28282a',
        'inverted,attention=full,mlp=2': '8655ff60f24596a7eea3',
        'attention=full,lm_head=0': '65ad7ca8899b66f6204a',
        'inverted,attention=full,lm_head=0': '3a7a2bea7d8a03cfe438',
        'attention=full,lm_head=0,mlp=2': 'ab837a397d17bbc5e3ba',
        'inverted,attention=full,lm_head=0,mlp=2': 'ab98a46f4a0bd5a2a22c',
        'attention=full,lm_head=2': 'bfc40bb7443f0153d45e',
        'inverted,attention=full,lm_head=2': '1fa7de0232164e776762',
        'attention=full,lm_head=2,mlp=2': 'd844d7c2d69e75079b65',
        'inverted,attention=full,lm_head=2,mlp=2': '81c83d8e5f210c428fcc',
    },
}
# END EXPECTED


def _ratio(fn: Callable, case: dict, where: str) -> float:
    got = _call(fn, where, **case)
    if isinstance(got, bool):
        got = None
    try:
        value = float(got)
    except (TypeError, ValueError):
        raise _fail(fn, where, "a number", f"{type(got).__name__} {got!r}", "return the ratio as a float") from None
    if not math.isfinite(value):
        raise _fail(fn, where, "a finite number", f"{value}", "return dense FLOPs / pruned FLOPs, a finite float")
    return value


def check_basic(fn: Callable) -> None:
    """A finite number; exactly 1 when nothing is removed; above 1 and growing as more layers go."""
    shape = dict(n_layers=8, hidden=32, vocab=512, seq_len=64, intermediate=96)
    ratios = []
    for n in range(4):
        case = {**shape, "n_removed": n}
        where = f"{case}"
        ratios.append(_ratio(fn, case, where))
        if n == 0 and abs(ratios[0] - 1) > 1e-9:
            raise _fail(fn, where, "1.0 (nothing removed, nothing gained)", f"{ratios[0]:.6g}",
                        "with n_removed = 0 the dense and the pruned model are the same: the ratio is 1")
    if not all(b > a for a, b in zip(ratios, ratios[1:])):
        raise _fail(fn, f"{shape} with n_removed = 0, 1, 2, 3", "a ratio above 1 that grows with n_removed",
                    [round(r, 4) for r in ratios],
                    "the speed-up is dense FLOPs / pruned FLOPs: removing layers lowers the pruned FLOPs, so the "
                    "ratio is > 1 and grows with n_removed")
    print(f"✓ {_name(fn)} returns 1 when nothing is removed and grows with the layers removed")


def check_values(fn: Callable, rtol: float = 0.02) -> None:
    """Within `rtol` of the ideal speed-up the library counts (hashed) on fixed model shapes."""
    for k, values in enumerate(VALUE_CASES):
        case = dict(zip(KEYS, values))
        where = f"value case {k + 1} of {len(VALUE_CASES)}: {case}"
        got = _ratio(fn, case, where)
        if not _agrees(f"a3|{k}", got, EXPECTED[f"a3|{k}"], rtol):
            mistake = _mistake(f"a3|{k}", got, MISTAKES)
            hint = "; ".join(HINTS[m] for m in mistake.split(",")) if mistake else _HINT_GENERIC
            raise _fail(fn, where, f"dense FLOPs / pruned FLOPs (within {rtol:.0%})", f"{got:.4f}", hint)
    print(f"✓ {_name(fn)} is within {rtol:.0%} of the FLOP ratio on {len(VALUE_CASES)} model shapes")


def check_trends(fn: Callable) -> None:
    """Longer sequences raise the ideal (attention, removed with the layers, grows as seq_len^2); a larger
    vocabulary lowers it (the LM head, never removed)."""
    shape = dict(n_layers=12, n_removed=4, hidden=64, intermediate=256)
    by_seq = [_ratio(fn, {**shape, "vocab": 1024, "seq_len": s}, f"{shape}, vocab=1024, seq_len={s}") for s in (16, 256, 4096)]
    if not all(b > a * (1 + 1e-6) for a, b in zip(by_seq, by_seq[1:])):
        raise _fail(fn, f"{shape}, vocab=1024, seq_len = 16, 256, 4096", "a ratio that grows with seq_len",
                    [round(r, 4) for r in by_seq], HINTS["attention=none"])
    by_vocab = [_ratio(fn, {**shape, "vocab": v, "seq_len": 256}, f"{shape}, vocab={v}, seq_len=256") for v in (256, 4096, 65536)]
    if not all(b < a * (1 - 1e-6) for a, b in zip(by_vocab, by_vocab[1:])):
        raise _fail(fn, f"{shape}, seq_len=256, vocab = 256, 4096, 65536", "a ratio that falls as vocab grows",
                    [round(r, 4) for r in by_vocab], HINTS["lm_head=0"])
    print(f"✓ {_name(fn)} grows with seq_len and falls with the vocabulary size")


def check_hidden(fn: Callable, reference: Callable, seed: int, n_random: int = 6, rtol: float = 0.02) -> None:
    """The grader's own cases against `reference` (supplied by the hidden test cell): extreme shapes
    (one token, long sequences, all but one layer removed) and seeded random ones."""
    cases = [dict(n_layers=4, n_removed=3, hidden=32, vocab=128, seq_len=1, intermediate=64),
             dict(n_layers=10, n_removed=9, hidden=64, vocab=256, seq_len=8192, intermediate=128),
             dict(n_layers=32, n_removed=1, hidden=4096, vocab=32000, seq_len=4096, intermediate=11008)]
    g = torch.Generator().manual_seed(seed)

    def pick(options):
        return options[int(torch.randint(len(options), (), generator=g))]

    for _ in range(n_random):
        L, hidden = pick(range(3, 41)), pick((32, 64, 576, 2048))
        cases.append(dict(n_layers=L, n_removed=pick(range(1, L)), hidden=hidden, vocab=pick((256, 32000, 128256)),
                          seq_len=pick((2, 100, 2048, 16384)), intermediate=hidden * pick((2, 3, 4))))
    for k, case in enumerate(cases):
        where = f"hidden case {k + 1} of {len(cases)}: {case}"
        got, expected = _ratio(fn, case, where), float(reference(**case))
        if not abs(got - expected) <= rtol * expected:
            raise _fail(fn, where, f"{expected:.4f}", f"{got:.4f} ({abs(got - expected) / expected:.1%} off; "
                        f"{rtol:.0%} allowed)", _HINT_GENERIC)
    print(f"✓ {_name(fn)} passed {len(cases)} hidden cases")

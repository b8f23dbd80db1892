"""Graders for the classroom assignments in notebooks/assignments/.

Each ``check_...(student_fn)`` runs the student's function against this library's reference on
seeded inputs and prints one line on success.  On failure it raises AssertionError with the input,
expected and got values, and a hint that names the usual mistake when the wrong answer matches one
(Frobenius instead of per-token norm, a naive layer ratio, ...), so the message teaches, not just
judges.  A function still raising NotImplementedError gets "fill in the function first".
"""
from __future__ import annotations

import copy
import itertools
import math
from typing import Any, Callable

import torch
from torch import nn

from .adapters import get_adapter, get_layers, scale_branch_output
from .losses import identity_gap
from .models import tiny_model
from .removal import remove_layers
from .speed import ideal_speedup

FILL_IN = ("fill in the function first: replace the `raise NotImplementedError` line with your code, "
           "then run that cell and this one again")


def _name(fn: Callable) -> str:
    return getattr(fn, "__name__", "your function")


def _call(fn: Callable, where: str, *args, **kwargs) -> Any:
    """Call the student's function, turning NotImplementedError and crashes into a readable failure."""
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise AssertionError(f"{_name(fn)} raised NotImplementedError: {FILL_IN}.") from None
    except Exception as err:
        raise AssertionError(f"{_name(fn)} crashed on {where}: {type(err).__name__}: {err}") from err


def _fail(fn: Callable, where: str, expected: Any, got: Any, hint: str) -> AssertionError:
    return AssertionError(f"{_name(fn)} is wrong on {where}\n  expected: {expected}\n  got:      {got}\n  hint: {hint}")


# ---- (a) the stage-2 loss -------------------------------------------------------------------------

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
    got = _call(fn, where, x_in, x_out, norm=norm)
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
    print(f"✓ {_name(fn)} passed {n_cases + 2} cases: value and gradients match trsp_lib.losses.identity_gap "
          "(l2 and l1), and an identity layer costs exactly 0")


# ---- (b) an importance criterion ------------------------------------------------------------------

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
                    "detach_gates(model, gating, fold=False) in a `finally:` block (see trsp_lib.criteria.captured_io)")
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
    """Grade ``criterion(model, calib, n) -> list[int]``: the shared contract of trsp_lib.criteria
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


# ---- (c) the ideal speed-up -----------------------------------------------------------------------

#: (n_layers, n_removed, hidden, vocab, seq_len, intermediate): fixed cases where the usual mistakes are far off
SPEEDUP_CASES = ((8, 2, 32, 2048, 128, 64), (12, 3, 64, 1024, 1024, 256), (30, 8, 64, 8192, 256, 192))


def _flops(n_layers: int, hidden: int, vocab: int, seq_len: int, intermediate: int,
           attention: str = "causal", lm_head: int = 1, mlp: int = 3) -> float:
    """Closed form of trsp_lib.speed.forward_flops for a Llama without GQA, plus the usual mistakes."""
    pairs = {"causal": seq_len * (seq_len + 1) / 2, "none": 0.0, "full": seq_len ** 2}[attention]
    per_layer = 2 * seq_len * (4 * hidden ** 2 + mlp * hidden * intermediate) + 2 * 2 * hidden * pairs
    return n_layers * per_layer + lm_head * 2 * seq_len * vocab * hidden


_SPEEDUP_HINTS = {
    "lm_head=0": "the LM head (a vocab x hidden matrix, 2*seq_len*vocab*hidden FLOPs) runs whatever you remove, so "
               "the ratio is below n_layers / (n_layers - n_removed): count it in both the dense and pruned FLOPs",
    "lm_head=2": "the embedding lookup is a gather and costs no multiply-adds: count the LM head once, not twice",
    "attention=none": "include attention's scores QK^T and weighted sum AV: per layer 2 matmuls of hidden "
                      "multiply-adds per query-key pair, seq_len*(seq_len+1)/2 pairs (causal); they grow with seq_len^2",
    "attention=full": "attention is causal: token t attends to t+1 positions, so seq_len*(seq_len+1)/2 pairs, "
                      "not seq_len^2",
    "mlp=2": "a Llama MLP has three matrices (gate_proj, up_proj, down_proj): 3 * hidden * intermediate weights",
}


def _speedup_hint(case: dict, got: float) -> str:
    L, n = case["n_layers"], case["n_removed"]
    shape = {k: case[k] for k in ("hidden", "vocab", "seq_len", "intermediate")}
    right = {"attention": "causal", "lm_head": 1, "mlp": 3}
    for attention, lm_head, mlp in itertools.product(("causal", "none", "full"), (1, 0, 2), (3, 2)):
        kw = dict(attention=attention, lm_head=lm_head, mlp=mlp)
        ratio = _flops(L, **shape, **kw) / _flops(L - n, **shape, **kw)
        for inverted in (False, True):
            value = 1 / ratio if inverted else ratio
            if abs(got - value) <= 1e-4 * abs(value):
                hints = [_SPEEDUP_HINTS[f"{k}={v}"] for k, v in kw.items() if v != right[k]]
                if inverted:
                    hints.insert(0, "the speed-up is dense FLOPs / pruned FLOPs (> 1), not pruned / dense")
                if hints:
                    return "; ".join(hints)
    return ("count 2 FLOPs per weight per token for every matrix of the decoder layers and of the LM head, plus "
            "attention's QK^T and AV (causal); norms and the embedding lookup are negligible or free (see the "
            "docstring of trsp_lib.speed.forward_flops)")


def _llama(n_layers: int, hidden: int, vocab: int, intermediate: int) -> nn.Module:
    heads = 4
    return tiny_model("llama", n_layers=n_layers, hidden_size=hidden, intermediate_size=intermediate,
                      vocab_size=vocab, num_attention_heads=heads, num_key_value_heads=heads, head_dim=hidden // heads)


def speedup_cases(n_random: int = 3, seed: int = 0) -> list[dict]:
    """The fixed cases, then `n_random` seeded random Llama shapes."""
    keys = ("n_layers", "n_removed", "hidden", "vocab", "seq_len", "intermediate")
    cases = [dict(zip(keys, c)) for c in SPEEDUP_CASES]
    g = torch.Generator().manual_seed(seed)

    def pick(options):
        return options[int(torch.randint(len(options), (), generator=g))]

    for _ in range(n_random):
        L = pick(range(4, 17))
        hidden = pick((32, 48, 64))
        cases.append(dict(n_layers=L, n_removed=pick(range(1, L)), hidden=hidden, vocab=pick((256, 1000, 4096)),
                          seq_len=pick((16, 64, 256, 1024)), intermediate=hidden * pick((2, 3, 4))))
    return cases


def check_speedup_prediction(fn: Callable, n_random: int = 3, seed: int = 0, rtol: float = 0.02) -> None:
    """Grade ``predict_speedup(n_layers, n_removed, hidden, vocab, seq_len, intermediate)`` against
    trsp_lib.speed.ideal_speedup on tiny Llamas of those shapes (no GQA), within `rtol` relative."""
    cases = speedup_cases(n_random, seed)
    worst = 0.0
    for k, case in enumerate(cases):
        where = f"case {k + 1} of {len(cases)}: {case}"
        got = _call(fn, where, **case)
        try:
            got = float(got)
        except (TypeError, ValueError):
            raise _fail(fn, where, "a number", f"{type(got).__name__} {got!r}", "return the ratio as a float") from None
        dense = _llama(case["n_layers"], case["hidden"], case["vocab"], case["intermediate"])
        drop = torch.randperm(case["n_layers"], generator=torch.Generator().manual_seed(k))[:case["n_removed"]]
        pruned = remove_layers(copy.deepcopy(dense), drop.tolist())
        expected = ideal_speedup(dense, pruned, case["seq_len"])
        err = abs(got - expected) / expected if math.isfinite(got) else math.inf
        if not err <= rtol:
            raise _fail(fn, where, f"{expected:.4f}  (trsp_lib.speed.ideal_speedup: dense FLOPs / pruned FLOPs)",
                        f"{got:.4f}  ({err:.1%} off; {rtol:.0%} allowed)", _speedup_hint(case, got))
        worst = max(worst, err)
    print(f"✓ {_name(fn)} passed {len(cases)} cases: within {rtol:.0%} of trsp_lib.speed.ideal_speedup "
          f"(worst {worst:.2%})")

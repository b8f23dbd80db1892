"""TRSP's pieces on tiny random models of every supported architecture (no downloads, seconds)."""

import pytest
import torch

from trsp_lib.surgery.adapters import get_layers
from trsp_lib.surgery.gating import attach_gates, detach_gates
from trsp_lib.method.losses import identity_gap, l1_scales
from trsp_lib.tiny import tiny_model
from trsp_lib.surgery.removal import remove_layers
from trsp_lib.method.trsp import TRSPConfig, TrainingDiverged, prune, select_smallest

ARCHS = ["llama", "qwen2", "mistral", "gemma3", "opt", "gpt2", "phi"]
IDS = torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(0))
# Folding is exact except for the norms' epsilon: norm(c*x) = norm(x) only when eps << mean(x^2).
# Tiny random models have hidden states of size ~0.02 (mean square ~4e-4, against eps 1e-5), so
# the folding tests shrink eps (`tiny_eps`); real models (mean square >> 1) fold as exactly.
# Tolerance: relative max |difference| / max |logit| in float32.
FOLD_RTOL = 1e-5


def tiny_eps(model, eps=1e-12):
    for module in model.modules():
        for attr in ("eps", "variance_epsilon"):
            if isinstance(getattr(module, attr, None), float):
                setattr(module, attr, eps)
    return model


def logits(model, ids=IDS):
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("mode", ["output", "branch"])
def test_gates_at_one_are_neutral(arch, mode):
    model = tiny_model(arch, n_layers=4)
    ref = logits(model)
    gating = attach_gates(model, mode)
    assert gating.scales.shape == (4,) and torch.all(gating.scales == 1)
    assert torch.allclose(logits(model), ref, atol=1e-6)
    detach_gates(model, gating, fold=True)
    assert torch.allclose(logits(model), ref, atol=1e-6)
    assert all(type(layer).__name__ != "GatedLayer" for layer in get_layers(model))


def test_skipped_layer_is_identity_and_scale_changes_output():
    model = tiny_model("llama", n_layers=4)
    gating = attach_gates(model, "output")
    base = logits(model)
    with torch.no_grad():
        gating.scales[1] = 0.5
    assert rel_err(logits(model), base) > 1e-3  # the gate is really in the forward pass
    with gating.skipping([1]):
        skipped = logits(model)
    assert rel_err(logits(model), skipped) > 1e-3  # ... and only inside the block
    detach_gates(model, gating, fold=False)
    remove_layers(model, [1])
    assert torch.allclose(logits(model), skipped, atol=1e-5)


def test_l1_gradient_is_sign_on_alive_layers_only():
    s = torch.tensor([0.8, -0.3, 1.2, 0.5], requires_grad=True)
    l1_scales(s, alive=[0, 1, 3]).backward()
    assert torch.equal(s.grad, torch.tensor([1.0, -1.0, 0.0, 1.0]))


@pytest.mark.parametrize("norm", ["l2", "l1"])
def test_identity_gap_value_and_gradient(norm):
    d = torch.zeros(2, 3, 8, requires_grad=True)
    assert identity_gap(d, norm).item() == 0.0
    d = torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(1), requires_grad=True)
    gap = identity_gap(d, norm)
    per_token = d.detach().norm(dim=-1) if norm == "l2" else d.detach().abs().sum(-1)
    assert gap.item() == pytest.approx(per_token.mean().item(), rel=1e-6)
    gap.backward()
    expected = d.detach() / d.detach().norm(dim=-1, keepdim=True) if norm == "l2" else d.detach().sign()
    assert torch.allclose(d.grad, expected / 6, atol=1e-6)


def test_stage2_term_is_zero_for_an_identity_layer():
    # A branch gate at 0 makes the layer exactly the identity: X_out - X_in is exactly zero.
    model = tiny_model("llama", n_layers=3)
    gating = attach_gates(model, "branch")
    with torch.no_grad():
        gating.scales[1] = 0.0
    with gating.capturing({0, 1}):
        logits(model)
        assert identity_gap(gating.diffs[1]).item() == 0.0
        assert identity_gap(gating.diffs[0]).item() > 0.0
    assert not gating.diffs and not gating.capture  # released at the end of the block


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("mode", ["output", "branch"])
def test_folding_reproduces_the_gated_logits(arch, mode):
    model = tiny_eps(tiny_model(arch, n_layers=4))
    gating = attach_gates(model, mode)
    with torch.no_grad():
        gating.scales.copy_(torch.tensor([0.6, 1.4, 0.8, 1.25]))
    gated = logits(model)
    detach_gates(model, gating, fold=True)
    assert rel_err(logits(model), gated) < FOLD_RTOL


@pytest.mark.parametrize("arch", ["llama", "gemma3", "gpt2"])
def test_fold_and_delete_equal_the_gated_model_with_pruned_gates_at_zero(arch):
    # What TRSP ships: branch gates of P faded to 0, kept gates folded, P deleted.
    model = tiny_eps(tiny_model(arch, n_layers=5))
    gating = attach_gates(model, "branch")
    with torch.no_grad():
        gating.scales.copy_(torch.tensor([0.9, 0.0, 1.1, 0.0, 0.7]))
    gated = logits(model)
    detach_gates(model, gating, fold=True, drop={1, 3})
    remove_layers(model, [1, 3])
    assert len(get_layers(model)) == 3
    assert rel_err(logits(model), gated) < FOLD_RTOL


def test_fold_rejects_a_non_positive_cumulative_scale():
    model = tiny_model("llama", n_layers=3)
    gating = attach_gates(model, "output")
    with torch.no_grad():
        gating.scales[0] = -0.5
    with pytest.raises(ValueError, match="fold_scales=False"):
        detach_gates(model, gating, fold=True)


def test_select_smallest_uses_raw_values_and_the_pool():
    s = torch.tensor([0.1, 0.5, -0.2, 0.3, 0.0])
    assert select_smallest(s, [1, 2, 3], 1) == [2]
    assert select_smallest(s, [0, 1, 3, 4], 2) == [4, 0]


def _tiny_calib(n=4, seq=12, seed=0):
    return torch.randint(0, 100, (n, seq), generator=torch.Generator().manual_seed(seed))


TINY = dict(n_samples=4, seq_len=12, batch_size=2, grad_accum=1, steps_per_round=1, stage2_steps=2)


def test_stage1_selects_the_layer_with_the_smallest_scale():
    # With a vanishing gate lr the scales stay where we put them: the wiring must pick layer 2, then 4.
    model = tiny_model("llama", n_layers=6)
    cfg = TRSPConfig(n_remove=2, gate_lr=1e-12, lambda1=0.0, stage2_steps=0, protect_last=1,
                     **{k: v for k, v in TINY.items() if k != "stage2_steps"})
    from trsp_lib.surgery import gating as gating_mod

    orig = gating_mod.attach_gates

    def attach_preset(m, mode):
        g = orig(m, mode)
        with torch.no_grad():
            g.scales.copy_(torch.tensor([1.0, 0.9, 0.3, 0.8, 0.5, 0.1]))  # layer 5 is protected
        return g

    import trsp_lib.method.trsp as trsp_mod
    trsp_mod.attach_gates, saved = attach_preset, trsp_mod.attach_gates
    try:
        result = prune(model, _tiny_calib(), cfg)
    finally:
        trsp_mod.attach_gates = saved
    assert result.removed == [2, 4]
    assert result.kept == [0, 1, 3, 5]


@pytest.mark.parametrize("overrides", [
    {}, {"gate": "output", "stage2_fade": False}, {"stage2_mode": "sequential"}, {"one_shot": True},
    {"stage1_train": "all", "stage2_penalty": "ungated", "stage2_fade": False, "norm": "l1"},
    {"gate_optimizer": "sgd", "stage2_train": "kept", "lambda2_warmup": 0.5, "fold_scales": False},
    {"fade_fraction": 0.5, "stage2_steps": 4},
])
def test_prune_end_to_end_on_a_tiny_model(overrides):
    model = tiny_model("llama", n_layers=6)
    cfg = TRSPConfig(ratio=0.34, **{**TINY, **overrides})  # round(0.34 * 6) = 2
    result = prune(model, _tiny_calib(), cfg)
    assert len(result.removed) == 2 and len(set(result.removed)) == 2
    assert 5 not in result.removed  # protect_last=1
    assert len(get_layers(model)) == 4 and model.config.num_hidden_layers == 4
    assert [type(layer).__name__ for layer in get_layers(model)] == ["LlamaDecoderLayer"] * 4
    stage1_steps = 2 * cfg.steps_per_round
    assert len(result.trajectory) == stage1_steps + cfg.stage2_steps
    assert all(len(row["scales"]) == 6 for row in result.trajectory)
    assert set(result.identity_gap) == set(result.removed)
    assert torch.isfinite(logits(model)).all()
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("fraction", [1.0, 0.5])
def test_faded_layers_are_exact_identities_at_the_end(fraction):
    model = tiny_model("llama", n_layers=6)
    result = prune(model, _tiny_calib(), TRSPConfig(ratio=0.34, fade_fraction=fraction, **{**TINY, "stage2_steps": 4}))
    assert all(gap == 0.0 for gap in result.identity_gap.values())
    assert all(result.final_scales[i] == 0.0 for i in result.removed)
    stage2 = [row["scales"] for row in result.trajectory if row["stage"] == 2]
    first = result.removed[0]
    expected = [1.0 - 1 / 4, 0.5, 0.25, 0.0] if fraction == 1.0 else [0.5, 0.0, 0.0, 0.0]
    start = stage2[0][first] / expected[0]
    assert [row[first] for row in stage2] == pytest.approx([start * e for e in expected])


def test_pruning_is_deterministic_for_a_seed():
    runs = []
    for _ in range(2):
        model = tiny_model("llama", n_layers=6)
        runs.append((prune(model, _tiny_calib(), TRSPConfig(ratio=0.34, **TINY)).removed, logits(model)))
    assert runs[0][0] == runs[1][0]
    assert torch.equal(runs[0][1], runs[1][1])


@pytest.mark.parametrize("kwargs, match", [
    ({"ratio": 0.0}, r"ratio must be in \(0, 1\)"),
    ({"ratio": 1.0}, r"ratio must be in \(0, 1\)"),
    ({"ratio": 1.5}, r"ratio must be in \(0, 1\)"),
    ({"ratio": 0.01}, "removes nothing"),
    ({"n_remove": 6}, "cannot remove 6 of 6"),
    ({"n_remove": 5, "protect_first": 1}, "only 4 candidates"),
    ({"gate": "input"}, "gate must be one of"),
    ({"gate": "output", "stage2_fade": True}, "stage2_fade needs gate='branch'"),
    ({"norm": "l3"}, "norm must be one of"),
])
def test_bad_configurations_fail_clearly(kwargs, match):
    model = tiny_model("llama", n_layers=6)
    with pytest.raises(ValueError, match=match):
        prune(model, _tiny_calib(), TRSPConfig(**{**TINY, **kwargs}))


def test_nan_loss_stops_with_a_clear_error_and_leaves_a_plain_model():
    model = tiny_model("llama", n_layers=4)
    with torch.no_grad():
        get_layers(model)[0].mlp.down_proj.weight.fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="loss is nan"):
        prune(model, _tiny_calib(), TRSPConfig(n_remove=1, **TINY))
    assert [type(layer).__name__ for layer in get_layers(model)] == ["LlamaDecoderLayer"] * 4


def test_folded_pruned_model_saves_and_reloads(tmp_path):
    from transformers import AutoModelForCausalLM

    from trsp_lib.surgery.removal import save_model

    model = tiny_model("qwen2", n_layers=6)
    prune(model, _tiny_calib(), TRSPConfig(ratio=0.34, **TINY))
    expected = logits(model)
    save_model(model, None, tmp_path / "m")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    assert again.config.num_hidden_layers == 4
    assert torch.allclose(logits(again), expected, atol=1e-5)
    out = again.generate(IDS[:1, :4], max_new_tokens=4, do_sample=False)
    assert out.shape == (1, 8)


def test_device_auto_spreads_with_accelerate_and_prunes_like_cpu(tiny_model_dir):
    """device="auto" is accelerate's device_map (several GPUs in real use); on a CPU-only machine it
    maps every module to the CPU, so the run must match the plain CPU run exactly."""
    from trsp_lib.surgery.devices import input_device, on_cuda, resolve_dtype
    from trsp_lib.models import load_model

    assert on_cuda("cuda:1") and not on_cuda("cpu")
    assert on_cuda("auto") == torch.cuda.is_available()
    assert resolve_dtype(None, "auto") == (torch.bfloat16 if torch.cuda.is_available() else torch.float32)
    runs = []
    for device in ("cpu", "auto"):
        model, _ = load_model(str(tiny_model_dir), device=device)
        assert input_device(model).type == "cpu" and next(model.parameters()).dtype == torch.float32
        torch.manual_seed(0)
        result = prune(model, _tiny_calib(), TRSPConfig(ratio=0.34, device=device, **TINY))
        runs.append((result.removed, logits(model)))
    assert runs[0][0] == runs[1][0]
    assert torch.equal(runs[0][1], runs[1][1])

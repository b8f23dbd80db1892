"""Stage 2's switches change what they say they change (not only the shapes of the outputs)."""
import pytest
import torch

from trsp_lib.surgery.gating import attach_gates
from trsp_lib.method.losses import identity_gap, identity_penalty
from trsp_lib.tiny import tiny_model
from trsp_lib.method.trsp import TRSPConfig, Trainer, measure_identity_gap, stage2

TINY = {"n_samples": 8, "seq_len": 16, "batch_size": 2, "grad_accum": 1, "steps_per_round": 1}
SELECTED = [2]


def _calib():
    return torch.randint(3, 100, (8, 16), generator=torch.Generator().manual_seed(0))


def _stage2(**overrides):
    """Gates attached, layer 2 in P (as stage 1 leaves it), then stage 2 alone; returns (model, gating, cfg)."""
    model = tiny_model("llama", n_layers=4).train()
    cfg = TRSPConfig(**{**TINY, **overrides})
    gating = attach_gates(model, cfg.gate)
    gating.skip(SELECTED)
    torch.manual_seed(0)
    stage2(Trainer(model, gating, _calib(), cfg), SELECTED)
    return model, gating, cfg


def _layer_weights(model, i):
    return [p.detach().clone() for p in model.model.layers[i].parameters()]


@pytest.mark.parametrize("train, selected_moves", [("kept", False), ("all", True)])
def test_stage2_train_kept_freezes_the_selected_layers_only(train, selected_moves):
    before = tiny_model("llama", n_layers=4)
    model, _, _ = _stage2(stage2_train=train, stage2_steps=3, lr=1e-3)
    moved = [any(not torch.equal(a, b) for a, b in zip(_layer_weights(before, i), _layer_weights(model, i).__iter__()))
             for i in range(4)]
    assert moved[2] is selected_moves
    assert moved[0] and moved[1] and moved[3]  # the kept layers always train


def test_lambda2_shrinks_the_identity_gap_with_the_fade_off():
    gaps = {}
    for lam in (0.0, 10.0):
        model, gating, cfg = _stage2(stage2_fade=False, lambda2=lam, stage2_steps=8, gate_lr=0.05)
        gaps[lam] = measure_identity_gap(model.eval(), gating, SELECTED, _calib()[:2], cfg)[2]
        assert 2 in gating.skipped  # stage 2 hands P back as it found it
    assert gaps[10.0] < 0.8 * gaps[0.0]


def test_the_ungated_penalty_is_the_gap_of_the_unscaled_layer():
    model = tiny_model("llama", n_layers=3)
    gating = attach_gates(model, "branch")
    ids = _calib()[:2]
    with gating.capturing([1]):
        model(input_ids=ids)
        full = identity_gap(gating.diffs[1]).item()
        assert identity_penalty(gating, [1], "l2", "ungated").item() == identity_penalty(gating, [1]).item() == full
    with torch.no_grad():
        gating.scales[1] = 0.25
    with gating.capturing([1]):
        model(input_ids=ids)
        gated = identity_penalty(gating, [1], "l2", "gated").item()
        ungated = identity_penalty(gating, [1], "l2", "ungated").item()
        assert gated == pytest.approx(identity_gap(gating.diffs[1]).item())  # what the gate lets through
    assert ungated == pytest.approx(gated / 0.25, rel=1e-5)   # the scale divided back out
    assert 0.1 * full < gated < 0.5 * full                    # the gate at 0.25 lets about a quarter through
    with pytest.raises(ValueError, match="stage2_penalty must be one of"):
        identity_penalty(gating, [1], "l2", "raw")

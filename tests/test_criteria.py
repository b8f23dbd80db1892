"""The baselines used as references by `trsp prune`, and the equal-budget fine-tune control."""
import pytest
import torch

from trsp_lib.surgery.adapters import get_layers, scale_branch_output, get_adapter
from trsp_lib.baselines.criteria import block_influence, reverse, shortgpt
from trsp_lib.tiny import TINY_ARCHS, tiny_model
from trsp_lib.method.trsp import TRSPConfig, finetune

CALIB = torch.randint(0, 100, (4, 12), generator=torch.Generator().manual_seed(0))


def test_shortgpt_picks_an_exact_identity_layer_first():
    model = tiny_model("llama", n_layers=5)
    scale_branch_output(get_layers(model)[3], get_adapter(model), 0.0)  # layer 3 is now the identity
    bi = block_influence(model, CALIB)
    assert bi[3] == pytest.approx(0.0, abs=1e-6) and min(bi[:3] + bi[4:]) > 1e-4
    assert shortgpt(model, CALIB, 2)[0] == 3
    assert [type(layer).__name__ for layer in get_layers(model)] == ["LlamaDecoderLayer"] * 5  # hooks gone


def test_reverse_removes_the_layers_before_the_last():
    model = tiny_model("llama", n_layers=6)
    assert reverse(model, None, 2) == [4, 3]
    with pytest.raises(ValueError, match="cannot remove 6 of 6"):
        reverse(model, None, 6)


def test_finetune_trains_the_weights_and_lowers_the_loss():
    model = tiny_model("llama", n_layers=3)
    before = [p.detach().clone() for p in model.parameters()]
    cfg = TRSPConfig(lr=1e-2, batch_size=2, grad_accum=1, warmup=0.0)
    traj = finetune(model, CALIB, steps=6, cfg=cfg)
    assert len(traj) == 6 and traj[-1]["lm"] < traj[0]["lm"]
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert [type(layer).__name__ for layer in get_layers(model)] == ["LlamaDecoderLayer"] * 3


def _with_identity_layer(arch="llama", n_layers=5, identity=3):
    model = tiny_model(arch, n_layers=n_layers)
    scale_branch_output(get_layers(model)[identity], get_adapter(model), 0.0)
    return model


@pytest.mark.parametrize("name", ["sleb", "ppl", "taylor", "shortgpt"])
def test_an_exact_identity_layer_is_chosen_first(name):
    from trsp_lib.baselines import criteria

    model = _with_identity_layer()
    chosen = getattr(criteria, name)(model, CALIB, 2)
    assert chosen[0] == 3 and len(set(chosen)) == 2
    assert getattr(criteria, name)(model, CALIB, 2) == chosen  # deterministic


def test_sleb_rescores_given_what_is_removed():
    from trsp_lib.baselines.criteria import calib_loss, sleb, sleb_reference

    model = tiny_model("llama", n_layers=5)
    order = sleb(model, CALIB, 2)
    second = {i: calib_loss(model, CALIB, {order[0], i}) for i in range(5) if i != order[0]}
    assert order[1] == min(second, key=second.get)
    assert sleb_reference(model, CALIB, 2) == order  # the kept straightforward search agrees


def test_angular_returns_the_closest_contiguous_block():
    from trsp_lib.baselines.criteria import angular

    model = tiny_model("llama", n_layers=6)
    for i in (2, 3):
        scale_branch_output(get_layers(model)[i], get_adapter(model), 0.0)
    assert angular(model, CALIB, 2) == [2, 3]  # input and output of the block are identical


def test_random_is_seeded_and_every_criterion_checks_n():
    from trsp_lib.baselines import criteria
    from trsp_lib.baselines.criteria import random_layers

    model = tiny_model("llama", n_layers=6)
    assert random_layers(model, None, 3, seed=1) == random_layers(model, None, 3, seed=1)
    assert random_layers(model, None, 3, seed=1) != random_layers(model, None, 3, seed=2)
    for criterion in (criteria.shortgpt, criteria.angular, criteria.sleb, criteria.ppl, criteria.taylor, criteria.laco,
                      criteria.reverse, criteria.random_layers, criteria.magnitude):
        with pytest.raises(ValueError, match="cannot remove 6 of 6"):
            criterion(model, CALIB, 6)


def test_laco_merges_parameter_differences_into_the_earlier_layer():
    from trsp_lib.baselines.criteria import laco
    model = tiny_model("llama", n_layers=6)
    layers = get_layers(model)
    theta = [{k: p.detach().clone() for k, p in layer.named_parameters()} for layer in layers]
    removed = laco(model, CALIB, 2, merge=3, threshold=-1.0)  # accept the first merge: layers 4, 5 into 3
    assert removed == [4, 5]
    for k, p in layers[3].named_parameters():
        expected = theta[3][k] + (theta[4][k] - theta[3][k]) + (theta[5][k] - theta[3][k])
        assert torch.allclose(p, expected, atol=1e-6)
    for i in (0, 1, 2, 4, 5):  # only the merge target changes
        assert all(torch.equal(p, theta[i][k]) for k, p in layers[i].named_parameters())


def test_laco_always_returns_n_layers_and_restores_rejected_merges(capsys):
    from trsp_lib.baselines.criteria import laco
    model = tiny_model("llama", n_layers=6)
    removed = laco(model, CALIB, 3, merge=2, threshold=1.5)  # nothing passes at first: the threshold drops
    assert len(removed) == 3 and len(set(removed)) == 3 and 0 not in removed
    assert "lowering the threshold" in capsys.readouterr().out


def test_laco_never_scores_the_same_trial_twice(monkeypatch, capsys):
    """Walks at a lowered threshold repeat the earlier trials on the same weights: their similarity is reused."""
    from trsp_lib.baselines import criteria

    scored = []
    real = criteria.last_hidden

    def recording(model, calib, skip=()):
        state = round(sum(float(p.detach().double().sum()) for p in model.parameters()), 6)
        scored.append((frozenset(skip), state))
        return real(model, calib, skip)

    monkeypatch.setattr(criteria, "last_hidden", recording)
    model = tiny_model("llama", n_layers=8)
    removed = criteria.laco(model, CALIB, 3, merge=2, threshold=1.5)
    assert "lowering the threshold" in capsys.readouterr().out  # several walks happened
    assert len(removed) == 3 and len(scored) == len(set(scored))


def test_magnitude_removes_the_layer_with_the_smallest_weights_first():
    """The README's example of a new criterion: its registry entry makes it a pipeline like any other."""
    import copy

    from trsp_lib.baselines.criteria import magnitude
    from trsp_lib.pipelines import Job, parse, select

    model = tiny_model("llama", n_layers=6)
    with torch.no_grad():
        for p in get_layers(model)[4].parameters():
            p.mul_(0.01)
    assert magnitude(model, None, 2)[0] == 4 and len(set(magnitude(model, None, 2))) == 2
    job = Job(copy.deepcopy(model), 1, TRSPConfig())
    assert select(parse("magnitude+ft"), job)["removed"] == [4] and job.model.config.num_hidden_layers == 5
    assert parse("magnitude").key_params(0.25, 1, TRSPConfig(), 16, 0)["criterion_samples"] is None  # sees no data


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_sleb_reusing_prefixes_matches_the_full_forward_search(arch):
    """Same layers and the same per-candidate losses as one whole forward pass per candidate, on every architecture
    (gemma2/3: sliding and global layers alternate with a 4-token window < 12 tokens; 6 rows: batches of 4 and 2)."""
    from trsp_lib.baselines.criteria import full_forward_losses, sleb_search

    model = tiny_model(arch, n_layers=5)
    calib = torch.randint(3, 100, (6, 12), generator=torch.Generator().manual_seed(1))
    fast, fast_steps = sleb_search(model, calib, 2)  # the second step restarts past a removed layer
    slow, slow_steps = sleb_search(model, calib, 2, full_forward_losses)
    assert fast == slow and len(set(fast)) == 2
    for fast_losses, slow_losses in zip(fast_steps, slow_steps, strict=True):
        assert fast_losses.keys() == slow_losses.keys() and len(set(slow_losses.values())) > 1
        for i, loss in slow_losses.items():
            assert fast_losses[i] == pytest.approx(loss, rel=1e-5), (arch, i)
    assert not any(type(layer).__name__ == "GatedLayer" for layer in get_layers(model))  # hooks gone


def test_sleb_candidate_losses_refuse_removed_candidates():
    from trsp_lib.baselines.shared_prefix import candidate_losses

    with pytest.raises(ValueError, match=r"candidates \[1\] are already removed"):
        candidate_losses(tiny_model("llama", n_layers=3), CALIB, [1], [0, 1])

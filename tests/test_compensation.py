"""`lin`: the closed-form map that stands in for a run of removed layers, folded into weights."""
import copy

import pytest
import torch

from trsp_lib.baselines.compensation import branch_module, compensate, contiguous_runs, fit_map, fold_map, solve
from trsp_lib.models import tiny_model
from trsp_lib.surgery.removal import remove_layers

CALIB = torch.randint(3, 100, (8, 16), generator=torch.Generator().manual_seed(0))


def test_contiguous_runs():
    assert contiguous_runs([7, 3, 4, 9, 10]) == [(3, 4), (7, 7), (9, 10)]
    assert contiguous_runs([]) == []


def test_least_squares_recovers_a_known_linear_map():
    g = torch.Generator().manual_seed(0)
    m = torch.randn(500, 6, generator=g, dtype=torch.float64)
    t_true = torch.randn(6, 6, generator=g, dtype=torch.float64)
    r = m @ t_true
    assert torch.allclose(solve(m.T @ m, m.T @ r, 0.0, diagonal=False), t_true, atol=1e-8)
    d = torch.diag(torch.tensor([2.0, -1.0, 0.5, 3.0, 1.0, 0.1], dtype=torch.float64))
    assert torch.allclose(solve(m.T @ m, m.T @ (m @ d), 0.0, diagonal=True).diagonal(), d.diagonal(), atol=0.3)
    shrunk = solve(m.T @ m, m.T @ r, 10.0, diagonal=False)  # ridge pulls the map toward 0
    assert shrunk.norm() < t_true.norm()


def test_lin_reproduces_a_removed_block_that_is_exactly_linear_in_the_branch():
    """If the removed layer adds exactly (M T - M) on top of layer 0's output, the map is exact."""
    model = tiny_model("llama", n_layers=3)
    t_true = torch.eye(32) + 0.3 * torch.randn(32, 32, generator=torch.Generator().manual_seed(1))
    layers = model.model.layers
    store = {}
    hook = branch_module(model, 0).register_forward_hook(lambda m, a, o: store.__setitem__("m", o))
    layer1_forward = layers[1].forward
    layers[1].forward = lambda h, *a, **k: h + store["m"] @ t_true - store["m"]  # a linear "layer"
    with torch.no_grad():
        want = model(input_ids=CALIB).logits
    T = fit_map(model, 0, model, 1, CALIB, alpha=0.0)
    hook.remove()
    layers[1].forward = layer1_forward
    assert torch.allclose(T.float(), t_true, atol=1e-3)
    fold_map(model, 0, T)
    remove_layers(model, [1])
    with torch.no_grad():
        got = model(input_ids=CALIB).logits
    assert torch.allclose(got, want, atol=1e-3)


@pytest.mark.parametrize("arch", ["llama", "gemma3", "gpt2", "opt"])
def test_fold_equals_applying_the_map_at_run_time(arch):
    model = tiny_model(arch, n_layers=3)
    diagonal = arch == "gemma3"
    g = torch.Generator().manual_seed(2)
    T = (torch.diag(1 + 0.2 * torch.randn(32, generator=g)) if diagonal
         else torch.eye(32) + 0.2 * torch.randn(32, 32, generator=g))
    hook = branch_module(model, 1).register_forward_hook(lambda m, a, o: o @ T)
    with torch.no_grad():
        want = model(input_ids=CALIB).logits
    hook.remove()
    fold_map(model, 1, T.double())
    with torch.no_grad():
        got = model(input_ids=CALIB).logits
    assert torch.allclose(got, want, atol=1e-4)


@pytest.mark.parametrize("sequential", [False, True])
def test_compensate_beats_plain_removal_and_saves_a_stock_checkpoint(tmp_path, sequential):
    from transformers import AutoModelForCausalLM

    dense = tiny_model("llama", n_layers=6)
    removed = [2, 3]
    plain = copy.deepcopy(dense)
    remove_layers(plain, removed)
    comp = copy.deepcopy(dense)
    info = compensate(comp, removed, CALIB, alpha=0.0, sequential=sequential)
    assert info["runs"] == [[2, 3]] and info["uncompensated_runs"] == []
    assert len(comp.model.layers) == 4
    with torch.no_grad():
        ref = dense(input_ids=CALIB).logits
        err_plain = (plain(input_ids=CALIB).logits - ref).pow(2).mean()
        err_comp = (comp(input_ids=CALIB).logits - ref).pow(2).mean()
    assert err_comp < err_plain
    comp.save_pretrained(tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path)
    with torch.no_grad():
        assert torch.allclose(again(input_ids=CALIB).logits, comp(input_ids=CALIB).logits, atol=1e-5)
        out = again.generate(CALIB[:1, :4], max_new_tokens=5, do_sample=False, use_cache=True)
    assert out.shape == (1, 9)


def test_a_run_at_layer_zero_is_removed_uncompensated():
    model = tiny_model("llama", n_layers=5)
    info = compensate(model, [0, 3], CALIB, sequential=True)
    assert info["uncompensated_runs"] == [[0, 0]] and len(model.model.layers) == 3


def test_pick_on_validation_reads_only_the_validation_metric():
    from study.searches import pick_on_validation

    cands = [({"a": 0}, {"ppl_wiki_val": 50.0, "ppl_wiki": 10.0}), ({"a": 1}, {"ppl_wiki_val": 40.0, "ppl_wiki": 99.0})]
    assert pick_on_validation(cands)[0] == {"a": 1}  # the better test number of the first does not matter
    with pytest.raises(ValueError, match="compute the rows first"):
        pick_on_validation([({"a": 0}, {"ppl_wiki": 1.0})])


def test_pareto_front():
    from study.frontier import pareto_front

    assert pareto_front([(1, 10), (2, 5), (3, 6), (0.5, 20), (2, 5)]) == [True, True, False, True, True]


def test_kd_pairs_pair_each_selection_and_skip_incomplete_ones():
    from study.frontier import kd_pairs

    ppl = {"a": 100.0, "a+ft (lr 2e-5)": 60.0, "a+kd": 50.0, "a+ft": 55.0, "b": 90.0, "b+ft (lr 2e-5)": 70.0}
    pairs = kd_pairs([{"label": k, "ppl_wiki": v} for k, v in ppl.items()], "a,b", " (lr 2e-5)")  # b: no +kd row yet
    assert list(pairs["selection"]) == ["a"]
    assert pairs.loc[0, "distillation / fine-tune (lr 2e-5)"] == 50.0 / 60.0
    assert pairs.loc[0, "distillation / that"] == 50.0 / 55.0  # against the fine-tune at its validated lr


def test_edge_check_reads_validation_only_and_never_changes_the_choice():
    from study.frontier import edge_check

    chosen = {"method": "sleb+lin+kd", "ppl_wiki_val": 40.0, "ppl_wiki": 45.0}
    past = {"method": "sleb+lin+kd", "ppl_wiki_val": 38.0, "ppl_wiki": 60.0}  # better on validation, worse on test
    e = edge_check(chosen, past, {"lr": 1e-3, "temperature": 1.0}, "ppl_wiki_val")
    assert e["moves"] and (e["val"], e["chosen_val"], e["test"]) == (38.0, 40.0, 60.0)
    assert e["record"][0]["chosen"] == "" and "past the grid" in e["record"][0]["setting"]
    worse = {**past, "ppl_wiki_val": 41.0}
    assert not edge_check(chosen, worse, {"lr": 1e-3, "temperature": 1.0}, "ppl_wiki_val")["moves"]


def test_the_plan_rejects_an_incomplete_heal_scope():
    from study.plan import Params

    with pytest.raises(ValueError, match="heal_scope needs 'last' and 'lrs'"):
        Params.of(heal_scope={"last": 3})

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


def test_findings_pick_the_best_pipeline_on_validation_not_test():
    from study.verdicts import findings
    from study.frontier import pipelines_table

    def row(method, test, val, s=60.0):
        return {"method": method, "ppl_wiki": test, "ppl_news": test, "ppl_wiki_val": val, "prune_s": s}

    rows = [{"method": "dense", "ppl_wiki": 20.0, "ppl_news": 20.0, "prune_s": 0.0},
            row("sleb+lin", 50.0, 40.0), row("shortgpt+lin", 45.0, 41.0),  # better on test, worse on validation
            row("sleb+lin+kd", 30.0, 25.0, 600.0), row("trsp", 90.0, None, 300.0),
            row("trsp+lin", 40.0, 20.0, 300.0)]  # trains while selecting: never "training-free"
    t = pipelines_table(rows)
    lines = findings(t, {"lin": {"alpha": 0.0, "sequential": False}, "ft": None,
                         "kd": {"lr": 1e-4, "temperature": 1.0}})
    assert "`sleb+lin`" in lines[0] and "missed" not in lines[0]  # 50 <= 55: reached
    assert "`trsp+lin`" in lines[1] and "2.00x" in lines[1]  # the best that spends the budget, by validation
    assert "(by validation) is `trsp+lin`" in lines[2]  # plain trsp has no validation score: not a candidate
    assert "**`lin` after TRSP** helps: 90.00 -> 40.00" in lines[3]
    assert "largest of the grid" not in lines[-1]
    grid = [{"lr": 2e-5, "temperature": 1.0}, {"lr": 1e-4, "temperature": 1.0}]
    edge = findings(t, {"lin": {"alpha": 0.0, "sequential": False}, "ft": None, "kd": {"lr": 1e-4, "temperature": 1.0}},
                    heal_grid=grid)
    assert "distillation learning rate is the largest of the grid (0.0001)" in edge[-1]


def test_kd_pairs_pair_each_selection_and_skip_incomplete_ones():
    from study.frontier import kd_pairs

    ppl = {"a": 100.0, "a+ft (lr 2e-5)": 60.0, "a+kd": 50.0, "a+ft": 55.0, "b": 90.0, "b+ft (lr 2e-5)": 70.0}
    pairs = kd_pairs([{"label": k, "ppl_wiki": v} for k, v in ppl.items()], "a,b", " (lr 2e-5)")  # b: no +kd row yet
    assert list(pairs["selection"]) == ["a"]
    assert pairs.loc[0, "distillation / fine-tune (lr 2e-5)"] == 50.0 / 60.0
    assert pairs.loc[0, "distillation / that"] == 50.0 / 55.0  # against the fine-tune at its validated lr


def test_kd_verdict_claims_against_the_validated_fine_tune_and_reports_broken_ones_apart():
    import pandas as pd

    from study.verdicts import kd_verdict

    lr = " (lr 2e-5)"
    cols = ["selection", "alone", f"+ fine-tune{lr}", "+ distillation", f"distillation / fine-tune{lr}",
            "+ fine-tune, lr chosen on validation", "distillation / that"]
    pairs = pd.DataFrame([["sleb", 76.0, 60.0, 45.0, 0.75, 50.0, 0.90],
                          ["angular", 310.0, 94.5, 56.2, 0.59, None, None],
                          ["laco", 1.04e10, 3.1e8, 8501.6, 2.7e-5, None, None]], columns=cols)
    text = kd_verdict(pairs, lr)
    assert text.startswith("Against fine-tuning at its validated learning rate (sleb), distillation's perplexity is "
                           "0.90x the fine-tune's: distillation wins.")
    assert "after 2 of 2 selections (ratio 0.59-0.75)" in text  # LaCo's 2.7e-05 is not a "win" counted
    assert "most of that gap is the fine-tune's learning rate" in text  # 0.90 against 0.75
    assert "After `laco` both stay unusable (alone 1.0e+10; + fine-tune (lr 2e-5) 3.1e+08, + distillation " \
        "8,501.60)" in text
    pairs.loc[0, "distillation / that"] = 1.1
    assert "1.10x the fine-tune's: distillation loses." in kd_verdict(pairs, lr)


def test_edge_check_reads_validation_only_and_never_changes_the_choice():
    from study.frontier import edge_check

    chosen = {"method": "sleb+lin+kd", "ppl_wiki_val": 40.0, "ppl_wiki": 45.0}
    past = {"method": "sleb+lin+kd", "ppl_wiki_val": 38.0, "ppl_wiki": 60.0}  # better on validation, worse on test
    e = edge_check(chosen, past, {"lr": 1e-3, "temperature": 1.0}, "ppl_wiki_val")
    assert e["moves"] and (e["val"], e["chosen_val"], e["test"]) == (38.0, 40.0, 60.0)
    assert e["record"][0]["chosen"] == "" and "past the grid" in e["record"][0]["setting"]
    worse = {**past, "ppl_wiki_val": 41.0}
    assert not edge_check(chosen, worse, {"lr": 1e-3, "temperature": 1.0}, "ppl_wiki_val")["moves"]


def test_findings_report_the_edge_check_when_the_choice_sits_at_the_grid_edge():
    from study.verdicts import findings
    from study.frontier import pipelines_table

    rows = [{"method": "dense", "ppl_wiki": 20.0, "ppl_news": 20.0, "prune_s": 0.0},
            {"method": "sleb+lin+kd", "ppl_wiki": 30.0, "ppl_news": 30.0, "ppl_wiki_val": 25.0, "prune_s": 600.0}]
    kd = {"lr": 3e-4, "temperature": 1.0}
    grid = [{"lr": 1e-4, "temperature": 1.0}, kd]
    run = {"lin": {"alpha": 0.0, "sequential": True}, "ft": None, "kd": kd,
           "edge": {"point": {"lr": 1e-3}, "val": 24.0, "chosen_val": 25.0, "test": 29.0, "moves": True}}
    line = findings(pipelines_table(rows), run, heal_grid=grid)[-1]
    assert "lr 0.001 gives validation perplexity 24.00 against 25.00: a wider grid would move the choice" in line
    run["edge"] = {**run["edge"], "val": 26.0, "moves": False}
    assert "the choice stands" in findings(pipelines_table(rows), run, heal_grid=grid)[-1]


def test_second_verdict_compares_each_pipeline_with_its_selection_and_kd_with_the_best_fine_tune():
    from study.frontier import pipelines_table
    from study.verdicts import second_verdict

    lrs = {"sleb+ft": 2e-5, "shortgpt+ft": 2e-5, "sleb+lin+kd": 3e-4, "sleb+kd": 2e-5, "trsp": 2e-5, "sleb": 9.0}
    rows = [{"method": m, "ppl_wiki": v, "ppl_news": v, "prune_s": 60.0, "params": {"config": {"lr": lrs.get(m)}}}
            for m, v in [("dense", 27.0), ("sleb", 167.0), ("sleb+ft", 67.0), ("shortgpt+ft", 81.0),
                         ("sleb+lin", 144.0), ("sleb+lin+kd", 60.0), ("sleb+kd", 50.0), ("trsp", 100.0)]]
    t = pipelines_table(rows)
    assert t.set_index("pipeline")["lr"].isna().to_dict() == {  # only rows that train carry a learning rate
        "sleb": True, "sleb+lin": True, "sleb+ft": False, "shortgpt+ft": False, "sleb+lin+kd": False, "sleb+kd": False,
        "trsp": False}
    lines = second_verdict(t, "sleb+lin,sleb+lin+kd,trsp+lin")  # trsp+lin not computed: skipped
    assert lines[0] == "- `sleb+lin`: 144.00 against `sleb` alone 167.00 (0.86x)."
    assert lines[1].startswith("- `sleb+lin+kd`: 60.00 against `sleb` alone")
    assert "- `sleb+kd` at lr 2e-05 against `sleb+ft` at lr 2e-05: 50.00 against 67.00 (0.75x)." in lines
    assert "- `sleb+lin+kd` at lr 0.0003 against `sleb+ft` at lr 2e-05: 60.00 against 67.00 (0.90x)." in lines
    assert len(lines) == 4  # shortgpt+ft has no kd partner; a kd row without its selection's +ft row gets no line


def test_the_healing_scope_row_is_named_apart_and_compared_with_every_weight_healing():
    from study.searches import setting_name
    from study.verdicts import findings
    from study.frontier import pipelines_table

    assert setting_name({"lr": 3e-4, "temperature": 1.0, "last": 3}) == "lr 3e-04, T 1, last 3 layers + head"
    assert setting_name({"lr": 3e-4, "temperature": 1.0}) == "lr 3e-04, T 1"

    def row(val, test, s, last=0):
        config = {"lr": 3e-4, **({"heal_last": last} if last else {})}
        return {"method": "sleb+lin+kd", "label": "sleb+lin+kd" + (f" (last {last} + head)" if last else ""),
                "ppl_wiki": test, "ppl_news": test, "ppl_wiki_val": val, "prune_s": s, "params": {"config": config}}

    rows = [{"method": "dense", "ppl_wiki": 20.0, "ppl_news": 20.0, "prune_s": 0.0}, row(35.0, 46.6, 1980.0),
            row(40.0, 52.0, 1500.0, last=3)]
    t = pipelines_table(rows)
    assert sorted(t["pipeline"]) == ["sleb+lin+kd", "sleb+lin+kd (last 3 + head)"]
    run = {"lin": {"alpha": 0.0, "sequential": False}, "ft": None, "kd": {"lr": 3e-4, "temperature": 1.0},
           "scope": {"lr": 1e-3, "temperature": 1.0, "last": 3}}
    line = next(x for x in findings(t, run) if "Healing scope" in x)
    assert "last 3 layers and the LM head (lr 0.001, chosen on validation) gives 52.00 against 46.60" in line
    assert "in 25.0 against 33.0 CPU minutes." in line  # both measured on a CPU
    edge = next(x for x in findings(t, run, scope_lrs=[3e-4, 1e-3]) if "Healing scope" in x)
    assert "its lr is at an end of its grid (0.0003, 0.001), so a wider grid might do better." in edge
    assert not any("Healing scope" in x for x in findings(t, {**run, "scope": None}))
    rows[1]["provenance"] = {"cuda": "H200"}  # the full row on a GPU: its cost is composed, and the line says so
    gpu = next(x for x in findings(pipelines_table(rows), run) if "Healing scope" in x)
    assert "(estimated: that row ran on a GPU) CPU minutes" in gpu


def test_the_plan_rejects_an_incomplete_heal_scope():
    from study.plan import Params

    with pytest.raises(ValueError, match="heal_scope needs 'last' and 'lrs'"):
        Params.of(heal_scope={"last": 3})

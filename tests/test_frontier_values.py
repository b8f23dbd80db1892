"""The frontier chapter's values (`study.verdicts`) and figure (`study.frontier.pareto_figure`): what its markdown
glues. Picks are made on validation, never test; verdict words follow the numbers; a missing row gives "n/a".
"""
from __future__ import annotations

import pandas as pd
import pytest

from study.frontier import pareto_figure, pipelines_table
from study.plan import Params
from study.verdicts import NA, answer, kd, scope, second, settings


def row(method, test, val=None, s=60.0, label=None, lr=None, last=0):
    config = {"lr": lr, **({"heal_last": last} if last else {})}
    return {"method": method, "label": label or method, "ppl_wiki": test, "ppl_news": test, "ppl_wiki_val": val,
            "prune_s": s, "params": {"config": config}}


DENSE = {"method": "dense", "ppl_wiki": 20.0, "ppl_news": 20.0, "prune_s": 0.0, "zs_avg": 0.5,
         "zs_n": {"piqa": 50, "arc_easy": 50}}


def test_answer_picks_on_validation_not_test():
    rows = [DENSE, row("sleb+lin", 50.0, 40.0), row("shortgpt+lin", 45.0, 41.0),  # better on test, worse on val
            row("sleb+lin+kd", 30.0, 25.0, 600.0), row("trsp", 90.0, None, 300.0),
            row("trsp+lin", 40.0, 20.0, 300.0)]  # trains while selecting: never "training-free"
    v = answer(pipelines_table(rows), DENSE)
    assert (v["free_name"], v["free_ppl"], v["free_goal_verdict"]) == ("SLEB + lin", "50.0", "reached")
    assert (v["best_name"], v["best_x"], v["budget_goal_verdict"]) == ("TRSP + lin", "2.00", "missed")
    assert v["trsp_name"] == "TRSP + lin"  # plain TRSP has no validation score: not a candidate
    assert (v["trsp_alone_ppl"], v["trsp_lin_ppl"], v["trsp_lin_verdict"]) == ("90.0", "40.0", "helps")
    assert v["dense_ppl"] == "20.0" and v["zs_se"] == "0.05"  # sqrt(0.25 / 100)
    assert v["trsp_front"] in ("on", "not on")


def test_answer_says_n_a_where_the_rows_have_no_pick():
    v = answer(pipelines_table([DENSE, row("shortgpt", 90.0)]), DENSE)
    assert v["best_name"] == v["trsp_front"] == v["trsp_lin_verdict"] == NA


def test_settings_report_the_choice_and_the_check_past_the_grid():
    P = Params.of()
    run = {"lin": {"alpha": 0.0, "sequential": True}, "ft": {"lr": 1e-4, "temperature": 1.0},
           "kd": {"lr": 3e-4, "temperature": 1.0}, "rows": [DENSE, {**row("sleb+lin+kd", 30.0, 25.0), "ft_steps": 48,
                                                                  "ft_tokens": 49152, "n_removed": 8, "n_layers": 30}],
           "edge": {"point": {"lr": 1e-3}, "val": 24.0, "chosen_val": 25.0, "test": 29.0, "moves": True}}
    v = settings(P, run)
    assert (v["lin_mode"], v["ft_lr"], v["kd_lr"], v["edge_lr"]) == ("fitted in sequence", "1e-04", "3e-04", "1e-03")
    assert (v["edge_val"], v["edge_chosen_val"], v["edge_verdict"]) == ("24.0", "25.0", "would move")
    assert (v["budget_steps"], v["budget_tokens"], v["n_removed"], v["last_layer"]) == (48, "49,152", 8, 29)
    assert settings(P, {**run, "edge": {**run["edge"], "moves": False}})["edge_verdict"] == "stands"
    assert settings(P, {**run, "edge": None})["edge_verdict"] == NA


def test_scope_compares_the_last_layers_with_every_weight_healing():
    from study.searches import setting_name

    assert setting_name({"lr": 3e-4, "temperature": 1.0, "last": 3}) == "lr 3e-04, T 1, last 3 layers + head"
    rows = [DENSE, row("sleb+lin+kd", 46.6, 35.0, 1980.0, lr=3e-4),
            row("sleb+lin+kd", 52.0, 40.0, 1500.0, label="sleb+lin+kd (last 3 + head)", lr=1e-3, last=3)]
    t = pipelines_table(rows)
    run = {"scope": {"lr": 1e-3, "temperature": 1.0, "last": 3}}
    v = scope(t, run, [3e-4, 1e-3])
    assert (v["scope_ppl"], v["scope_full_ppl"], v["scope_min"], v["scope_full_min"]) == ("52.0", "46.6", "25", "33")
    assert (v["scope_where"], v["scope_full_cost"]) == ("at the high end of", "measured")
    assert scope(t, {"scope": None}, None)["scope_ppl"] == NA


def kd_table(lr=" (lr 2e-5)"):
    cols = ["selection", "alone", f"+ fine-tune{lr}", "+ distillation", f"distillation / fine-tune{lr}",
            "+ fine-tune, lr chosen on validation", "distillation / that"]
    return pd.DataFrame([["sleb", 76.0, 60.0, 45.0, 0.75, 50.0, 0.90], ["angular", 310.0, 94.5, 56.2, 0.59, None, None],
                         ["laco", 1.04e10, 3.1e8, 8501.6, 2.7e-5, None, None]], columns=cols)


def test_kd_claims_against_the_validated_fine_tune_and_sets_broken_selections_apart():
    pairs = kd_table()
    v = kd(pairs, " (lr 2e-5)", [{"label": "laco", "removed": [29, 11, 12]}])
    assert (v["kd_fair_where"], v["kd_fair_span"], v["kd_fair_verdict"]) == ("SLEB", "0.900", "wins")
    assert (v["kd_weak_wins"], v["kd_weak_n"], v["kd_weak_span"]) == (2, 2, "0.590–0.750")  # LaCo is not a "win"
    assert v["kd_lr_share"] == "most"  # log 0.90 / log 0.75 < 1/2: most of the lead is the learning rate
    assert (v["kd_broken"], v["kd_broken_alone"], v["kd_broken_kd"]) == ("LaCo", "> 10⁶", "8,502")
    assert v["kd_broken_layers"] == "11, 12, 29" and v["kd_reverse_alone"] == NA
    pairs.loc[0, "distillation / that"] = 1.1
    assert kd(pairs, " (lr 2e-5)")["kd_fair_verdict"] == "loses"
    assert set(kd(None, " (lr 2e-5)").values()) == {NA}


def test_second_compares_each_pipeline_with_its_selection_and_kd_with_fine_tuning():
    lrs = {"sleb+ft": 2e-5, "sleb+lin+kd": 3e-4, "sleb+kd": 2e-5, "trsp": 2e-5}
    rows = [row(m, v, lr=lrs.get(m)) for m, v in [("dense", 27.0), ("sleb", 167.0), ("sleb+ft", 67.0),
                                                  ("sleb+lin", 144.0), ("sleb+lin+kd", 60.0), ("sleb+kd", 66.0),
                                                  ("trsp", 100.0)]]
    v = second(pipelines_table(rows), rows[0], "")
    assert (v["s_lin_ppl"], v["s_lin_vs"], v["s_lin_ratio"], v["s_lin_verdict"]) == ("144", "167", "0.862", "helps")
    assert v["s_kd_ft_verdict"] == "ties"  # 66 against 67: within 5%
    assert (v["s_carried_verdict"], v["s_carried_lr"]) == ("wins", "3e-04")
    assert v["s_trsp_lin_verdict"] == NA  # trsp+lin not computed
    assert set(second(None, None, "").values()) == {NA}


@pytest.mark.parametrize("zoom", [True, False])
def test_the_figure_marks_the_answer_and_enlarges_the_crowd(zoom):
    import matplotlib

    matplotlib.use("Agg")
    rows = [DENSE, row("sleb+lin+kd", 30.0, 25.0, 600.0), row("sleb+kd", 31.0, 26.0, 610.0 if zoom else 6100.0),
            row("shortgpt", 90.0, s=6.0), row("trsp", 60.0, 50.0, 120.0)]
    fig = pareto_figure(pipelines_table(rows), DENSE)
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert len(shown) == (2 if zoom else 1)
    assert any(t.get_text() == "SLEB + lin + KD" for t in shown[-1].texts)


def test_the_kd_table_leaves_out_the_ratio_of_two_unusable_models():
    from study.frontier import kd_shown

    t = kd_shown(kd_table(), " (lr 2e-5)")
    assert list(t["selection"]) == ["SLEB", "angular distance", "LaCo"]
    ratio = t["KD / fine-tune (lr 2e-5)"]
    assert ratio[0] == 0.75 and pd.isna(ratio[2])  # LaCo: both above UNUSABLE

"""study.gates and study.importance: the values and figures chapters 01-03 glue, on a hand-made run."""
import math

import matplotlib
import pandas as pd
import pytest

from study import gates, importance

matplotlib.use("Agg")


def trajectory() -> list[dict]:
    """4 layers (the last protected), 2 rounds of 2 steps, then 4 stage-2 steps fading layers 2 and 0 in 2."""
    s1 = [[1.0, 0.99, 0.98, 1.0], [0.98, 0.97, 0.95, 1.0],      # round 0: layer 2 is the smallest
          [0.97, 0.96, 0.95, 1.0], [0.955, 0.958, 0.95, 1.0]]   # round 1: layer 0, by 0.003
    s2 = [[0.48, 0.96, 0.48, 1.0], [0.0, 0.96, 0.0, 1.0], [0.0, 0.95, 0.0, 1.0], [0.0, 0.95, 0.0, 1.0]]
    rows = [{"stage": 1, "round": k // 2, "step": k, "lm": 3.0 + 0.1 * k, "reg": 0.1, "scales": s}
            for k, s in enumerate(s1)]
    return rows + [{"stage": 2, "round": None, "step": 4 + k, "lm": 2.0 + k, "reg": 0.01, "scales": s}
                   for k, s in enumerate(s2)]


def run(**kw) -> dict:
    return {"method": "trsp", "n_layers": 4, "n_removed": 2, "removed": [2, 0], "ratio": 0.5,
            "trajectory": trajectory(), "identity_gap": {"2": 0.0, "0": 0.0}, "ppl_wiki": 30.0, "ppl_news": 40.0,
            "zs_avg": 0.4, "zs_n": {"piqa": 50, "arc_easy": 50},
            "params": {"config": {"protect_first": 0, "protect_last": 1, "gate_lr": 0.01, "steps_per_round": 2}}, **kw}


def test_selections_measure_each_round_against_the_candidates_left():
    sel = gates.run_selections(run())
    assert sel["layer"].tolist() == [2, 0] and sel["round"].tolist() == [1, 2]
    assert sel["margin"].tolist() == pytest.approx([0.97 - 0.95, 0.958 - 0.955])  # layer 3 is never a candidate


def test_run_values_state_the_run_and_its_dense_model():
    v = gates.run_values(run(), {"method": "dense", "ppl_wiki": 10.0, "ppl_news": 20.0, "zs_avg": 0.5})
    assert v["removed_order"] == "2 and 0" and v["removed_sorted"] == "0 and 2" and v["n_kept"] == 2
    assert v["fade_steps"] == 2 and v["stage2_steps"] == 4 and v["gap_max"] == 0.0
    assert v["ppl_ratio"] == pytest.approx(3.0) and v["zs_items"] == 50 and v["ratio_pct"] == 50
    assert v["lm_first"] == pytest.approx(3.15) and v["lm_faded"] == pytest.approx(4.5)
    assert v["step_change"] == pytest.approx(0.01)
    assert v["groups"] == "do not overlap"  # kept gates end stage 1 at >= 0.958, removed ones at <= 0.955


def test_a_missing_dense_row_or_zero_shot_gives_nan_not_an_error():
    v = gates.run_values(run(zs_avg=None, zs_n=None), None)
    assert math.isnan(v["dense_ppl_wiki"]) and math.isnan(v["trsp_zs"]) and math.isnan(v["zs_items"])
    assert gates.before_after(None, run())["method"].tolist() == ["trsp"]


def test_listing_and_fade():
    assert gates.listing([]) == "none" and gates.listing([3]) == "3" and gates.listing(["a", "b", "c"]) == "a, b and c"
    k, curve = gates.fade(16, 0.5)
    assert k == 8 and curve[0] == 1.0 and curve[8] == 0.0 and len(curve) == 17


def test_figures_are_closed_and_legible():
    import matplotlib.pyplot as plt

    from study import style

    with matplotlib.rc_context():
        matplotlib.rcParams.update(style.RC)  # the book's kernels run styled
        figs = [gates.trajectory_figure(trajectory(), [2, 0]), gates.loss_figure(trajectory()),
                gates.placement_figure(16, 0.5)]
    assert not {f.number for f in figs} & set(plt.get_fignums())  # glued, not shown a second time
    for fig in figs:
        fig.canvas.draw()
        sizes = [t.get_fontsize() for t in fig.findobj(matplotlib.text.Text) if t.get_text()]
        assert min(sizes) >= 9
    legend = figs[0].axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["kept layers", "layer 2 (round 1)", "layer 0 (round 2)",
                                                          "selected"]


def test_importance_agreement_and_removals():
    rows = [{"method": "dense", "ppl_wiki": 10.0}, run(),
            {"method": "reverse", "n_layers": 4, "removed": [2, 1], "ppl_wiki": 5e9},
            {"method": "shortgpt", "n_layers": 4, "removed": [1, 2], "ppl_wiki": 50.0}]
    frame = importance.scores_frame(rows, {"shortgpt": [0.9, 0.1, 0.2, 0.8], "ppl": [5.0, 1.0, 2.0, 4.0]})
    assert isinstance(frame, pd.DataFrame) and frame.columns[0] == importance.TRSP
    agree = importance.agreement(frame, 2)
    assert agree["rho_max"] == pytest.approx(1.0) and agree["common"] == [1, 2]
    assert agree["rho_max_pair"] == "ShortGPT and PPL (Shortened LLaMA)" and agree["oneshot_verdict"] == "broadly agree"
    assert agree["trsp_verdict"] == ("agree" if agree["rho_trsp_max"] >= importance.AGREE else "hardly agree")
    out = importance.removal_values(rows, agree["common"])
    assert out["collapsed"] == "reverse order" and out["n_collapsed"] == 1 and out["laco_removed"] == "none"
    assert out["worst_ppl"] == 50.0 and out["dense_ppl"] == 10.0 and out["trsp_in_common"] == 1
    fig = importance.removal_figure(rows)
    assert [t.get_text() for t in fig.axes[0].child_axes[0].get_yticklabels()] == ["30.0", "> 10⁶", "50.0"]
    assert importance.ranks(frame)[importance.TRSP].min() == 1

"""The baselines and ablations chapters' library: values (no sentences), tables with human names, and figures
whose chosen point is drawn on top."""
import math

import matplotlib
import pandas as pd

from study import ablations, baselines, ratio_sweep

matplotlib.use("Agg")


def comparison_table() -> pd.DataFrame:
    rows = [("dense", 0, 10.0, 0.50), ("trsp", 2, 30.0, 0.40), ("shortgpt", 2, 40.0, 0.41), ("sleb", 2, 20.0, 0.39),
            ("shortgpt+ft (lr 2e-5)", 2, 25.0, 0.42), ("sleb+ft (lr 2e-5)", 2, 15.0, 0.43), ("laco", 2, 1e10, 0.3)]
    return pd.DataFrame([{"method": m, "n_removed": n, "ppl_wiki": p, "ppl_news": p * 1.1, "zs_avg": z, "zs_se": 0.03,
                          "prune_s": 60.0} for m, n, p, z in rows])


def test_outcome_finds_the_best_baselines_and_computes_verdict_words():
    o = baselines.outcome(comparison_table())
    assert (o["best_sel"], o["best_sel_ppl"], o["sel_verdict"]) == ("SLEB", 20.0, "higher")
    assert o["best_ft"] == "SLEB + fine-tune (lr 2e-5)" and o["ft_verdict"] == "higher"
    assert o["rank"] == 4 and o["n_pruned"] == 6
    assert o["zs_verdict_sel"] == "tie" and math.isclose(o["zs_gap_ft"], -0.03)


def test_missing_second_model_glues_placeholders_not_crashes():
    filled = baselines._missing(baselines.outcome(comparison_table()))
    assert filled["best_sel"] == "n/a" and math.isnan(filled["trsp_ppl"])


def test_identical_pairs_are_the_same_set_of_layers():
    rows = [{"method": "sleb", "removed": [3, 1]}, {"method": "taylor", "removed": [1, 3]},
            {"method": "shortgpt", "removed": [1, 2]}, {"method": "trsp", "removed": [1, 3]}]
    assert [(a["method"], b["method"]) for a, b in baselines.identical(rows)] == [("sleb", "taylor")]


def test_ladder_legend_draws_trsp_open_as_in_the_plot():
    t = comparison_table()
    fig = baselines.ladder({"tables": {"m": t}, "rows": {"m": [{"n_layers": 8}]}})
    trsp = [h for h in fig.legends[0].legend_handles if h.get_label().startswith("TRSP")][0]
    assert trsp.get_markerfacecolor() == "white"


def test_sweep_table_has_no_index_name_row_and_counts_ratios():
    sw = pd.DataFrame([{"method": m, "ratio": r, "ppl_wiki": p} for r, ps in ((0.25, (10, 20, 15, 12)),
                                                                              (0.5, (10, 40, 60, 30)))
                       for m, p in zip(("dense", "trsp", "shortgpt", "shortgpt+ft (lr 2e-5)"), ps)])
    t = ratio_sweep.table(sw)
    assert list(t["layers removed"]) == ["25%", "50%"] and t.index.name is None
    assert ratio_sweep.counts(sw) == {"sweep_n": 2, "sweep_sel_lower": 1, "sweep_ft_lower": 2, "sweep_sel": "ShortGPT",
                                      "sweep_ft": "ShortGPT + fine-tune (lr 2e-5)"}


def test_search_settings_are_written_in_words():
    assert ablations.describe({}) == "default"
    assert ablations.describe({"stage2_mode": "sequential", "lambda1": 0.1}) == "λ1 = 0.1, sequential stage 2"
    assert ablations.human("lambda2 = 0.01") == "λ2 = 0.01"


def test_search_figure_draws_the_chosen_run_on_top_of_its_duplicate():
    rec = pd.DataFrame([{"setting": "default", "PPL wiki (val)": 2.0, "PPL wiki (test)": 2.0, "chosen": ""},
                        {"setting": "a", "PPL wiki (val)": 1.0, "PPL wiki (test)": 1.5, "chosen": "yes"},
                        {"setting": "a twin", "PPL wiki (val)": 1.0, "PPL wiki (test)": 1.5, "chosen": ""}])
    ax = ablations.search_figure(rec).axes[0]
    star = [c for c in ax.collections if c.get_label().startswith("chosen")][0]
    assert star.get_zorder() > max(c.get_zorder() for c in ax.collections if c is not star)
    assert {t.get_text() for t in ax.texts} >= {"chosen", "default"}

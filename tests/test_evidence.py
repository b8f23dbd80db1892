"""The evidence layer: per-item zero-shot records, paired bootstrap, the seed rule, the declared TRSP
search, and keys that record the arithmetic rather than the machine."""
from __future__ import annotations

import numpy as np
import pytest

from study import searches
from study.stats import beyond_spread, paired_bootstrap, seed_spread
from trsp_lib.method.config import TRSPConfig, config_key
from trsp_lib.zeroshot import pack_items, unpack_items


def _row(method: str, correct: dict[str, list[int]]) -> dict:
    return {"method": method, "zs_items": {t: pack_items(v) for t, v in correct.items()},
            "zs_n": {t: len(v) for t, v in correct.items()}}


def test_items_round_trip():
    bits = [1, 0, 0, 1, 1, 1, 0, 1, 0, 1, 1]  # not a multiple of 8: the tail must not leak padding
    assert unpack_items(pack_items(bits), len(bits)).tolist() == [bool(b) for b in bits]
    assert len(pack_items([1] * 500)) == 84


def test_paired_bootstrap_sees_a_real_gap_and_a_tie():
    rng = np.random.default_rng(1)
    base = (rng.random(400) < 0.5).astype(int)
    better = base.copy()
    better[rng.choice(np.flatnonzero(base == 0), 60, replace=False)] = 1  # +0.15 on the same items
    a, b = (_row("a", {"t1": better.tolist(), "t2": base.tolist()}),
            _row("b", {"t1": base.tolist(), "t2": base.tolist()}))
    r = paired_bootstrap([a], [b], n_boot=2000)
    assert r["diff"] == pytest.approx(0.075) and 0 < r["lo"] < r["diff"] < r["hi"]
    assert r["tasks"]["t2"]["diff"] == 0 and r["tasks"]["t2"]["lo"] == 0 == r["tasks"]["t2"]["hi"]
    shuffled = _row("c", {"t1": rng.permutation(base).tolist(), "t2": rng.permutation(base).tolist()})
    tie = paired_bootstrap([shuffled], [b], n_boot=2000)
    assert tie["lo"] < 0 < tie["hi"]  # same accuracy, different items: no claim


def test_paired_bootstrap_averages_seeds_and_rejects_other_items():
    a1, a2 = _row("a", {"t": [1, 1, 0, 0]}), _row("a", {"t": [1, 0, 0, 0]})
    b = _row("b", {"t": [0, 0, 0, 0]})
    assert paired_bootstrap([a1, a2], [b], n_boot=200)["diff"] == pytest.approx(0.375)
    with pytest.raises(ValueError, match="different items"):
        paired_bootstrap([a1], [_row("b", {"t": [0, 0, 0]})])
    with pytest.raises(ValueError, match="per-item"):  # a perplexity-only row alone
        paired_bootstrap([{"method": "old", "zs_n": {"t": 4}}], [b])


def test_the_interval_widens_when_seeds_disagree():
    """Three seeds of `a`: one far better, one far worse, one like `b` on the same items. Averaging the seeds first
    hides that spread; resampling seeds, then items, shows it: the interval widens and holds the mean."""
    rng = np.random.default_rng(3)
    base = (rng.random(500) < 0.5).astype(int)

    def shifted(k: int) -> list[int]:  # k items flipped toward correct (k > 0) or wrong (k < 0)
        out = base.copy()
        pool = np.flatnonzero(base == (0 if k > 0 else 1))
        out[rng.choice(pool, abs(k), replace=False)] = 1 if k > 0 else 0
        return out.tolist()

    a = [_row("a", {"t": shifted(k)}) for k in (120, -100, 5)]
    b = [_row("b", {"t": base.tolist()})]
    items_only = paired_bootstrap(a, b, n_boot=2000, seeds=False)
    both = paired_bootstrap(a, b, n_boot=2000)
    assert both["diff"] == items_only["diff"] and both["resampled"] == "seeds and items"
    assert both["hi"] - both["lo"] > 2 * (items_only["hi"] - items_only["lo"])
    assert both["lo"] < both["diff"] < both["hi"]
    agree = [_row("a", {"t": shifted(40)}) for _ in range(3)]  # seeds that agree: nearly the same interval
    close = paired_bootstrap(agree, b, n_boot=2000), paired_bootstrap(agree, b, n_boot=2000, seeds=False)
    assert abs((close[0]["hi"] - close[0]["lo"]) - (close[1]["hi"] - close[1]["lo"])) < 0.02


def test_seed_rule():
    assert beyond_spread([50.0, 51.0, 52.0], [53.0, 60.0, 55.0])
    assert not beyond_spread([50.0, 54.0, 52.0], [53.0, 60.0, 55.0])
    s = seed_spread([1.0, 2.0, 3.0])
    assert (s["mean"], s["sd"], s["min"], s["max"]) == (2.0, 1.0, 1.0, 3.0)


def test_search_is_declared_and_greedy_on_validation_only():
    """A fake evaluate: lambda1 0.01 and the sequential stage 2 each help on validation, together they help
    more; a fade of 1.0 helps on TEST only (it must not be chosen)."""
    calls = []

    def evaluate(points):
        calls.append(points)
        rows = []
        for p in points:
            val = 100.0 - 5 * (p.get("lambda1") == 0.01) - 3 * (p.get("stage2_mode") == "sequential")
            test = val - 50 * (p.get("fade_fraction") == 1.0)
            rows.append({"ppl_wiki_val": val, "ppl_wiki": test, "ppl_news": test})
        return rows

    out = searches.search_trsp(evaluate)
    assert out["best"] == {"lambda1": 0.01, "stage2_mode": "sequential"}
    assert len(calls[0]) == 1 + sum(len(v) for v in searches.KNOBS.values()) + len(searches.JOINT)
    assert len(out["record"]) <= searches.MAX_RUNS
    assert [r["setting"] for r in out["record"] if r["chosen"]] == ["lambda1=0.01, stage2_mode=sequential"]


def test_key_records_arithmetic_not_machine():
    cpu = config_key(TRSPConfig())
    assert config_key(TRSPConfig(device="cuda", autocast="none")) == cpu   # float32 on a GPU: the same key
    assert config_key(TRSPConfig(device="cuda")) != cpu                    # bf16 autocast: another computation
    assert config_key(TRSPConfig(device="cpu", autocast="bf16")) != cpu


def test_gpu_rows_are_costed_from_cpu_rows():
    from study.frontier import cpu_minutes

    gpu = {"provenance": {"cuda": "NVIDIA H200"}}
    rows = [{"method": "dense"}, {"method": "sleb", "prune_s": 600.0},
            {"method": "sleb+lin", "prune_s": 660.0, "ft_s": 60.0},
            {"method": "sleb+lin+kd", "prune_s": 900.0, "ft_s": 300.0},
            {"method": "sleb+ft", "prune_s": 780.0, "ft_s": 180.0}]
    assert cpu_minutes(rows[1], rows) == (10.0, False)
    assert cpu_minutes({"method": "sleb+kd", "prune_s": 5.0, **gpu}, rows) == (14.0, True)      # 600 + (300 - 60)
    assert cpu_minutes({"method": "sleb+lin+ft", "prune_s": 5.0, **gpu}, rows) == (14.0, True)  # 600 + 60 + 180
    no_kd = [r for r in rows if r["method"] != "sleb+lin+kd"]
    assert cpu_minutes({"method": "sleb+kd", "prune_s": 5.0, **gpu}, no_kd) == (13.0, True)    # 600 + ft's 180 at least


def test_one_seed_claims_read_the_relative_table():
    import pandas as pd

    from study.paper import ABLATION_CLAIMS, one_seed_claims, paper_evidence, relative

    ours = pd.DataFrame([
        {"model": "m", "method": "dense", "ppl": 10.0, "acc": 50.0, "acc_se": 1.0},
        {"model": "m", "method": "trsp", "ppl": 20.0, "acc": 40.0, "acc_se": 1.0},
        {"model": "m", "method": ABLATION_CLAIMS[0][1], "ppl": 30.0, "acc": float("nan")},   # R matters: 2.0 -> 3.0
        {"model": "m", "method": ABLATION_CLAIMS[2][1], "ppl": 20.5, "acc": float("nan")},   # lambda2: +2.5% < 5%
        {"model": "g", "method": "dense", "ppl": 10.0, "acc": 50.0, "acc_se": 1.0},
        {"model": "g", "method": "trsp", "ppl": 30.0, "acc": 40.0, "acc_se": 1.0},
        {"model": "g", "method": "shortgpt", "ppl": 40.0, "acc": 30.0, "acc_se": 1.0},
        {"model": "g", "method": "shortgpt+ft", "ppl": 25.0, "acc": 45.0, "acc_se": 1.0}])
    paper = pd.DataFrame([{"model": "L", "method": "dense", "ppl": 5.0, "acc": 60.0},
                          {"model": "L", "method": "trsp", "ppl": 7.0, "acc": 58.0},
                          {"model": "L", "method": "sleb", "ppl": 9.0, "acc": 50.0}])
    both = pd.concat([relative(paper, "paper"), relative(ours, "this study")], ignore_index=True)
    assert paper_evidence(both, "trsp", "sleb", "L") == "1.40 vs 1.80"
    assert paper_evidence(both, "trsp", "sleb+ft", "L") == "not measured"
    t = one_seed_claims(both, ours, "m", "L").set_index("claim")["holds here"]
    assert t["TRSP has lower perplexity than ShortGPT"] == "yes"             # 3.0 vs 4.0 on g
    assert t["TRSP has lower perplexity than ShortGPT + fine-tune"] == "no"  # 3.0 vs 2.5
    assert t["TRSP loses less zero-shot accuracy than ShortGPT"] == "yes"   # 10 vs 20 pp, s.e. 1.4
    assert t[ABLATION_CLAIMS[0][0]] == "yes" and t[ABLATION_CLAIMS[2][0]] == "no"
    assert t[ABLATION_CLAIMS[1][0]] == "not computed"  # no one-shot row
    assert "SLEB" not in " ".join(t.index)  # g has no SLEB row: no claim about it




def test_claims_give_values_and_reader_words():
    """claim_rows decides each claim by the seed rule and the interval; claim_values turns the verdicts into the
    glued words and counts; a missing row is NaN, never a crash."""
    import math

    from study import evidence

    rng = np.random.default_rng(0)
    base = (rng.random(200) < 0.5).astype(int).tolist()

    def rows(ppls: list[float]) -> list[dict]:
        return [{**_row("x", {"t": base}), "ppl_wiki": p, "ppl_news": p, "zs_avg": float(np.mean(base))}
                for p in ppls]

    main = {"dense": rows([10.0]), "trsp": rows([30.0, 50.0, 80.0]), "shortgpt": rows([40.0, 41.0]),
            "sleb": rows([20.0, 21.0])}
    claims = evidence.claim_rows(main)
    assert [c["claim"] for c in claims] == ["TRSP beats ShortGPT", "TRSP beats SLEB"]  # the others lack a side
    assert [(c["ppl"], c["zs_higher"], c["holds"]) for c in claims] == [("neither", "neither", "undecided"),
                                                                        ("B", "neither", "no")]
    v = evidence.claim_values(claims)
    assert v["verdict_trsp_vs_sleb"] == "does not beat" and v["verdict_trsp_vs_shortgpt"] == "cannot be told apart from"
    assert v["verdict_sleb_lin_kd_vs_trsp_tuned"] == "n/a" and v["answer"] == v["answer_paper"] == "No"
    assert (v["n_claims"], v["n_hold"], v["n_fail"], v["n_open"]) == (2, 0, 1, 1)
    r = evidence.row_values(main)
    assert r["trsp_ppl_main"] == 160 / 3 and r["sleb_ppl_min"] == 20.0 and math.isnan(r["sleb_lin_kd_ppl_main"])
    t = evidence.claims_table(claims, {"TRSP beats SLEB": "1.40 vs 1.80"}, detail=True)
    assert list(t["verdict"]) == ["cannot tell", "does not hold"]
    assert t.loc[1, "wiki perplexity, A vs B"] == "53.3 ± 25.2 vs 20.5 ± 0.7"
    assert list(t["lower by the seed rule"]) == ["neither", "SLEB"] and t.loc[1, "paper (LLaMA-2-7B)"] == "1.40 vs 1.80"
    assert math.isnan(evidence.table_values(None, "second")["trsp_ppl_second"])
    assert evidence.key("sleb+ft (lr 2e-5)") == "sleb_ft" and evidence.key("trsp (tuned)") == "trsp_tuned"

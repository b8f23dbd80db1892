"""What the speed chapter reads from its records: the study's speed-up is the comparison's own row, the sweep's
point beside it; spreads, verdicts and the LM head's share are computed, a missing row gives NaN, not a crash."""
from __future__ import annotations

import math

import matplotlib
import pytest

from study import speed

matplotlib.use("Agg")


def run(prefill: tuple[float, float], generate: tuple[float, float], ideal: float, new_tokens: int = 32) -> dict:
    """A compare_speed result: (dense, pruned) median seconds, min/max 10% around them."""
    def side(i: int) -> dict:
        return {k: {"median": v[i], "min": 0.9 * v[i], "max": 1.1 * v[i], "tokens_per_s": 100 / v[i]}
                for k, v in (("prefill", prefill), ("generate", generate))}
    return {"dense": side(0), "pruned": side(1), "ideal": {"prefill": ideal, "generate": ideal},
            "speedup": {"prefill": prefill[0] / prefill[1], "generate": generate[0] / generate[1]},
            "protocol": {"prefill_len": 256, "gen_batch": 4, "prompt_len": 64, "new_tokens": new_tokens, "reps": 5}}


def records() -> list[dict]:
    date = "2026-11-29T0{}:00:00+0000"
    sweep = [{"label": f"speed {r}", "params": {"ratio": r}, "result": run((1.3, 1.0), (1.2, 1.0), i),
              "provenance": {"date": date.format(5)}} for r, i in ((0.25, 1.27), (0.5, 1.66))]
    row = {"label": "speed", **run((1.29, 1.0), (1.27, 1.0), 1.27, 128), "provenance": {"date": date.format(1)}}
    return [*sweep, row]


def test_the_study_value_is_the_comparisons_row_and_the_sweep_point_is_beside_it():
    sweep, row = speed.split(records())
    v = speed.values(sweep, row, 0.25, 30)
    assert v["speedup_prefill"] == pytest.approx(1.29) and v["sweep_prefill"] == pytest.approx(1.3)
    assert (v["n_removed"], v["layer_ratio"]) == (8, pytest.approx(30 / 22))
    assert v["speedup_new_tokens"] == 128 and v["sweep_new_tokens"] == 32 and v["hours_apart"] == pytest.approx(4)
    assert v["spreads_verdict"] == "overlap" and v["ideal_verdict"] == "inside"
    assert v["prefill_above_n"] == 1 and v["generate_below_n"] == 2 and v["n_ratios"] == 2
    # ideal = 1 / (s + (1 - s) * 22 / 30) solved back for s
    s = v["head_share"]
    assert 1 / (s + (1 - s) * 22 / 30) == pytest.approx(1.27)


def test_spread_is_fastest_over_slowest():
    lo, hi = speed.spread(run((1.0, 1.0), (1.0, 1.0), 1.0), "prefill")
    assert (lo, hi) == (pytest.approx(0.9 / 1.1), pytest.approx(1.1 / 0.9))


def test_a_missing_comparison_row_gives_nan_not_a_crash():
    sweep, row = speed.split([r for r in records() if r["label"] != "speed"])
    v = speed.values(sweep, row, 0.25, 30)
    assert row is None and math.isnan(v["speedup_prefill"]) and v["ideal_verdict"] == "n/a"
    assert f"{v['speedup_prefill']:.2f}" == "nan"  # a glued format spec still formats
    assert speed.figure(sweep, row, 0.25, 30) is not None
    assert len(speed.table(sweep, row, 0.25, 30)) == 2


def test_the_table_has_one_row_per_measurement():
    sweep, row = speed.split(records())
    df = speed.table(sweep, row, 0.25, 30)
    assert list(df["measurement"]) == ["sweep, 32 new tokens"] * 2 + ["comparison's row, 128 new tokens"]
    assert list(df["layers removed"]) == ["8 (25%)", "15 (50%)", "8 (25%)"]

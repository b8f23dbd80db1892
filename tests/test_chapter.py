"""study.chapter: the closing block of every chapter (rerun command, measured cost, GPU estimate)."""
import json
import shlex

import pytest

import study
from study import chapter
from trsp_lib import results


def test_stored_records_what_a_chapter_used_cached_or_computed(tmp_path, monkeypatch):
    monkeypatch.setattr(study, "USED", {})
    monkeypatch.delenv("TRSP_FRESH", raising=False)
    path = tmp_path / "kind" / "k1.json"
    first = results.stored(path, "k1", lambda: {"x": 1})
    assert study.USED == {str(path): first} and first["wall_s"] >= 0 and first["cpu_s"] >= 0
    study.USED.clear()
    again = results.stored(path, "k1", lambda: pytest.fail("a cached record must not be recomputed"))
    assert list(study.USED) == [str(path)] and again["x"] == 1


def test_measured_cost_sums_wall_times_and_times_an_early_speed_row():
    speed = {"dense": {"prefill": {"median": 1.0}, "generate": {"median": 2.0}}, "pruned": {"prefill": {"median": 0.5}},
             "protocol": {"reps": 5, "warmup": 1}}  # no wall_s: 6 runs of (1 + 2 + 0.5) s
    records = {"a": {"wall_s": 100.0, "provenance": {"cpus": 2}}, "b": {"wall_s": 20.0, "provenance": {"cpus": 2}},
               "speed": speed, "odd": {"method": "x"}}
    cost = chapter.measured_cost(records)
    assert cost.seconds == pytest.approx(141.0)
    assert (cost.n_records, cost.untimed, cost.cpus) == (4, 1, (2,))


def test_rerun_command_passes_the_parameters_as_one_yaml_mapping():
    params = {"model": "smollm2-135m", "ratio": 0.25, "eval_texts": {"wiki": "wiki"}, "limit": None}
    cmd = chapter.rerun_command("04_baselines", params)
    words = shlex.split(cmd)
    assert words[:3] == ["papermill", "notebooks/04_baselines.ipynb", "out.ipynb"] and words[3] == "-y"
    assert json.loads(words[4]) == params
    assert chapter.rerun_command("01_method.ipynb", env="HF_HUB_OFFLINE=0").startswith("HF_HUB_OFFLINE=0 papermill")


def test_gpu_hours_is_six_n_per_trained_token_and_two_n_per_forward_token():
    hours, text = chapter.gpu_hours(7e9, 1e6, 3e6, peak_tflops=1000, mfu=0.5)
    assert hours == pytest.approx((6 * 7e9 * 1e6 + 2 * 7e9 * 3e6) / 5e14 / 3600)
    assert "6 × 7e+09" in text and "50% of an H100" in text


def test_the_budget_counts_both_stages():
    from trsp_lib.method.config import budget
    from trsp_lib.profiles import load

    cfg, _ = load("paper-scale")
    assert budget(cfg, 8).steps == 8 * 16 + 128
    assert budget(cfg, 8).tokens == (8 * 16 + 128) * 8 * 2048


def test_note_says_the_command_the_measured_cost_and_the_estimate():
    cost = chapter.Cost(seconds=1800.0, n_records=3, untimed=0, cpus=(2,))
    text = chapter.note_markdown("02_trsp", {"ratio": 0.25}, cost=cost, page_s=12.0,
                                 paper={"command": "papermill x y", "n_params": 6.7e9, "train_tokens": 4e6})
    assert "papermill notebooks/02_trsp.ipynb out.ipynb -y '{\"ratio\": 0.25}'" in text
    assert "3 results" in text and "30 min on 2 CPU cores" in text and "ran in 12 s" in text
    assert "GPU hours" in text and "papermill x y" in text
    empty = chapter.note_markdown("01_method", cost=chapter.Cost(0.0, 0, 0, ()), page_s=5.0)
    assert "reads no cached result" in empty and "ran in 5 s." in empty


def test_gpu_records_are_counted_apart_and_scaled():
    from study.chapter import measured_cost, note_markdown

    recs = {"a": {"wall_s": 100.0, "provenance": {"cpus": 2, "cuda": None}},
            "b": {"wall_s": 60.0, "provenance": {"cpus": 16, "cuda": "NVIDIA H200"}}}
    cost = measured_cost(recs)
    assert (cost.seconds, cost.n_gpu, cost.gpu_seconds, cost.cpus) == (100.0, 1, 60.0, (2,))
    text = note_markdown("07_paper_and_us", cost=cost)
    assert "1 results this chapter reads that were computed on CPU took 2 min" in text
    assert "1 of them were computed on an NVIDIA H200" in text and "gpu_check.json" in text


def test_the_closing_note_says_what_the_regeneration_found_for_this_chapter():
    from study.chapter import regeneration_note

    row = lambda key, label, ok: {"key": key, "label": label, "within tolerance": ok, "seconds on 2 cores": 1800.0}  # noqa: E731
    check = {"summary": {}, "rows": [row("a", "trsp", True), row("b", "sleb", False), row("z", "dense", True)]}
    read = {"/r/a.json": {"key": "a"}, "/r/b.json": {"key": "b"}, "/r/c.json": {"key": "c"}, "/r/gpu.json": {}}
    note = regeneration_note("04_baselines", read, check)
    assert "2 of the 3 results this chapter reads" in note and "60 min of work" in note
    assert "1 beyond the tolerances" in note and "(sleb)" in note and "Executed from" not in note
    check["summary"]["glued values"] = {"numbers beyond tolerance": [], "other values changed": [
        {"chapter": "04_baselines", "name": "verdict", "committed": "ties", "recomputed": "wins"},
        {"chapter": "05_ablations", "name": "other", "committed": 1, "recomputed": 2}]}
    assert "it states otherwise: `verdict` ties → wins." in regeneration_note("04_baselines", read, check)
    assert "every value it states is the same" in regeneration_note("09_instead", read, check)
    assert regeneration_note("04_baselines", {"/r/q.json": {"key": "q"}}, check) is None  # other parameters
    one = regeneration_note("04_baselines", {"/r/a.json": {"key": "a"}}, check)
    assert "the one result this chapter reads has been recomputed" in one and "; within the tolerances" in one
    both = regeneration_note("04_baselines", {"/r/a.json": {"key": "a"}, "/r/z.json": {"key": "z"}}, check)
    assert "all 2 results this chapter reads have been" in both and "all within the tolerances" in both

"""The scaling chapter's numbers: memory by setting, what fits which GPU, the GPU rows' recorded time, the
paper-scale estimate, and commands that name only parameters the chapters have."""
from __future__ import annotations

import json

import matplotlib
import pytest

from study import scaling

matplotlib.use("Agg")


def test_memory_values_name_each_setting_and_what_fits():
    mem = scaling.memory_table()
    v = scaling.memory_values(mem)
    assert v["mem_7b_prune_1_gpu_micro_batch_1"] < 80 < v["mem_7b_prune_1_gpu_micro_batch_8"] < 141
    assert "70B prune, 8 GPUs, bf16 + ckpt" in v["fits_small"] and v["fits_none"] == "70B prune, 8 GPUs"
    assert v["plain_70b"] == pytest.approx(2 * scaling.n_params(scaling.LLAMA2_CONFIGS[scaling.L70])["total"] / 1e9)
    assert v["plain_70b_node_tb"] == pytest.approx(8 * v["plain_70b"] / 1000)
    shown = scaling.memory_display(mem)
    assert list(shown["80 / 141 GB"])[:2] == ["no / yes", "yes / yes"]
    assert scaling.memory_figure(mem) is not None


def test_gpu_records_sum_wall_time_and_span(tmp_path):
    for i, (wall, end) in enumerate(((60.0, "2026-11-30T18:10:00+0000"), (120.0, "2026-11-30T18:05:00+0000"))):
        (tmp_path / f"{i}.json").write_text(json.dumps({"wall_s": wall, "provenance": {"cuda": "H200", "date": end}}))
    (tmp_path / "cpu.json").write_text(json.dumps({"wall_s": 999.0, "provenance": {"cuda": None}}))
    got = scaling.gpu_records(tmp_path)
    assert got == {"gpu_rows": 2, "gpu_device": "H200", "gpu_wall_min": 3.0, "gpu_span_min": 7.0}
    assert scaling.gpu_records(tmp_path / "none")["gpu_rows"] == 0


def test_paper_estimate_is_six_n_per_trained_token():
    from trsp_lib.profiles import load

    cfg, _ = load("paper-scale", ratio=0.25)
    est = scaling.paper_estimate(cfg)
    assert (est["est_removed"], est["est_layers"]) == (8, 32)
    flops = 6 * est["est_params_b"] * 1e9 * est["est_train_tokens_m"] * 1e6 + 2 * est["est_params_b"] * 1e9 * 12.68e6
    assert est["est_gpu_min"] == pytest.approx(flops / (989e12 * 0.4) / 60)


def test_commands_name_only_parameters_the_chapters_have():
    lines = scaling.one_gpu_commands("meta-llama/Llama-2-7b-hf", 0.25, "paper-scale", "cuda", 0, None,
                                     "wikitext2-train", {"wiki": "wikitext2"})
    assert lines[0] == "mkdir -p out" and sum("papermill" in x for x in lines) == 7
    with pytest.raises(ValueError, match="no parameter"):
        scaling.papermill_command("06_speed", "m", ratio=0.25)
    fsdp = scaling.fsdp_commands(["meta-llama/Llama-2-70b-hf"], 0.25, "paper-scale", 8, "wiki", {"wiki": "wiki"})
    assert "fsdp_gpu8_70b.yaml" in fsdp[1] and fsdp[2].startswith("HF_HUB_OFFLINE=0 trsp eval")

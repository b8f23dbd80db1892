"""The command line, end to end on a tiny model: output files, resume, and clear errors."""
import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from trsp_lib.cli import main

TINY = ["--profile", "tiny", "--no-baselines"]


def test_prune_writes_result_and_a_stock_checkpoint(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["prune", "--model", str(tiny_model_dir), "--ratio", "0.34", "--out", str(out), *TINY]) == 0
    printed = capsys.readouterr().out
    assert "removed 2 of 6 layers" in printed and "perplexity" in printed
    record = json.loads((out / "result.json").read_text())
    assert len(record["removed"]) == 2 and record["n_layers"] == 6
    assert set(record["perplexity"]) == {"dense", "trsp"}
    assert set(record["perplexity"]["dense"]) == {"wiki", "news"}
    assert record["provenance"]["trsp_lib"] and record["config"]["ratio"] == 0.34
    assert len(record["trajectory"]) == 2 * 1 + 2  # tiny profile: 1 step per round, 2 stage-2 steps
    model = AutoModelForCausalLM.from_pretrained(out / "model")
    assert model.config.num_hidden_layers == 4 and len(model.model.layers) == 4
    ids = torch.tensor([[5, 6, 7]])
    assert model.generate(ids, max_new_tokens=3, do_sample=False).shape == (1, 6)

    # A rerun with the same parameters reuses the finished result instead of recomputing.
    assert main(["prune", "--model", str(tiny_model_dir), "--ratio", "0.34", "--out", str(out), *TINY]) == 0
    assert "reusing it" in capsys.readouterr().out


def test_prune_baselines_use_the_comparison_selection(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["prune", "--model", str(tiny_model_dir), "--ratio", "0.34", "--out", str(out), "--profile", "tiny",
            "--baselines", "--finetune-baselines"]
    assert main(argv) == 0
    record = json.loads((out / "result.json").read_text())
    layers = record["baseline_layers"]
    assert layers["same layers, untrained"] == record["removed"]
    assert layers["last 2 before final, untrained"] == [4, 3]
    assert (layers["shortgpt + equal-budget ft"] == layers["shortgpt, untrained"]
            and len(set(layers["shortgpt, untrained"])) == 2)
    ppl = record["perplexity"]
    assert set(ppl) == {"dense", "trsp", *layers} and ppl["shortgpt + equal-budget ft"] != ppl["shortgpt, untrained"]


def test_eval_scores_a_text_file_with_and_without_layers(tiny_model_dir, tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 40)
    assert main(["eval", "--model", str(tiny_model_dir), "--text", str(text), "--profile", "tiny"]) == 0
    full = capsys.readouterr().out
    assert "t.txt" in full and ": 6 layers" in full
    assert main(["eval", "--model", str(tiny_model_dir), "--text", str(text), "--profile", "tiny",
                 "--remove-layers", "1,2"]) == 0
    assert ": 4 layers" in capsys.readouterr().out
    assert main(["eval", "--model", str(tiny_model_dir), "--profile", "tiny", "--remove-layers", "9"]) == 2
    assert "out of range" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["prune", "--ratio", "1.5"], "ratio must be in (0, 1)"),
    (["prune", "--ratio", "0"], "ratio must be in (0, 1)"),
    (["prune", "--n-remove", "6"], "cannot remove 6 of 6"),
    (["prune", "--gate", "sideways"], "gate must be one of"),
    (["eval", "--text", "no/such/file.txt"], "no/such/file.txt"),
    (["prune", "--calib", "no/such/calib.txt"], "no/such/calib.txt"),
    (["prune", "--stage2-fade", "--gate", "output"], "stage2_fade needs gate='branch'"),
])
def test_bad_input_ends_with_a_clear_message_and_exit_2(tiny_model_dir, tmp_path, capsys, argv, message):
    argv = [*argv, "--model", str(tiny_model_dir), "--profile", "tiny"]
    if argv[0] == "prune":
        argv += ["--out", str(tmp_path / "x"), "--no-baselines"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_unknown_model_says_how_to_get_one(tmp_path, capsys):
    assert main(["prune", "--model", "no-such-model-xyz", "--out", str(tmp_path / "x"), *TINY]) == 2
    err = capsys.readouterr().err
    assert "no-such-model-xyz" in err and "smollm2-135m" in err


def test_speed_compares_dense_and_pruned(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["prune", "--model", str(tiny_model_dir), "--ratio", "0.34", "--out", str(out), *TINY]) == 0
    capsys.readouterr()
    assert main(["speed", "--dense", str(tiny_model_dir), "--pruned", str(out / "model"), "--prefill-len", "16",
                 "--gen-batch", "2", "--new-tokens", "3", "--reps", "2"]) == 0
    printed = capsys.readouterr().out
    assert "(6 layers)" in printed and "(4 layers)" in printed and "FLOP ideal" in printed


def test_compare_prints_the_table_and_writes_csv(tiny_model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TRSP_RESULTS", str(tmp_path / "results"))
    out = tmp_path / "cmp"
    args = ["compare", "--model", str(tiny_model_dir), "--ratios", "0.34", "0.5", "--methods", "shortgpt,reverse",
            "--no-finetune", "--limit", "0", "--no-speed", "--criterion-samples", "4", "--profile", "tiny",
            "--save-models", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "shortgpt" in printed and "reverse" in printed and "results.csv" in printed
    lines = (out / "results.csv").read_text().splitlines()
    assert len(lines) == 1 + 1 + 2 * 2  # header, dense, two methods at two ratios
    reloaded = AutoModelForCausalLM.from_pretrained(out / "reverse-0.5" / "model")
    assert reloaded.config.num_hidden_layers == 3
    assert main([*args[:7], "shortgpt,reverse", "--finetune", "--finetune-methods", "reverse", *args[9:]]) == 0
    assert len((out / "results.csv").read_text().splitlines()) == 1 + 1 + 3 * 2  # + reverse+ft at both ratios
    capsys.readouterr()
    # --cached-only tabulates what exists and computes nothing (a third method is simply absent)
    assert main([*args[:7], "shortgpt,reverse,random", *args[8:], "--cached-only"]) == 0
    printed = capsys.readouterr().out
    assert "[random-0.34] not computed yet" in printed and "computing" not in printed
    assert len((out / "results.csv").read_text().splitlines()) == 6


def test_compare_bad_input_exits_2_with_one_line(tiny_model_dir, tmp_path, capsys):
    assert main(["compare", "--model", str(tiny_model_dir), "--methods", "shortgpt,nope", "--out", str(tmp_path)]) == 2
    assert "unknown method" in capsys.readouterr().err
    assert main(["compare", "--model", str(tiny_model_dir), "--ratios", "0", "--methods", "reverse", "--limit", "0",
                 "--profile", "tiny", "--out", str(tmp_path)]) == 2
    assert "ratios must be in (0, 1)" in capsys.readouterr().err


@pytest.mark.parametrize("flag, value, says", [("--lin-alpha", "-1", "lin alpha must be >= 0"),
                                               ("--heal-temperature", "0", "heal temperature must be > 0"),
                                               ("--heal-lr", "-1e-4", "heal lr must be > 0")])
def test_compare_rejects_a_bad_pipeline_option_in_one_line(tmp_path, capsys, flag, value, says):
    assert main(["compare", "--model", "tiny", "--ratios", "0.25", "--methods", "sleb", "--pipelines", "sleb+lin+kd",
                 "--out", str(tmp_path), f"{flag}={value}"]) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and len(err.splitlines()) == 1

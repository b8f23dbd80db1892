"""TRSP under FSDP: `accelerate launch` with 2 CPU processes (gloo) against one process.

The launched runs must remove the same layers and save checkpoints whose logits equal the
single-process run's within TOL, with the same global batch (the tiny profile's 2 rows per
micro-batch: one per process). `make test-fsdp` runs the slow ones; `.ci/run` calls it.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from study.scaling import memory_estimate, n_params

REPO = Path(__file__).resolve().parent.parent
CPU2 = REPO / "configs" / "accelerate" / "fsdp_cpu2.yaml"
ACCELERATE = Path(sys.executable).parent / "accelerate"
TOL = 1e-4  # max |logit difference| between the FSDP and the single-process checkpoints (measured: ~1e-6)
# lr 1e-3: training must move the logits far more than TOL, or equal logits would prove nothing.
TRAIN = ["--profile", "tiny", "--lr", "1e-3", "--ratio", "0.34"]

LLAMA2_7B = {"hidden_size": 4096, "num_attention_heads": 32, "num_key_value_heads": 32, "num_hidden_layers": 32,
             "intermediate_size": 11008, "vocab_size": 32000}


def test_memory_estimate_matches_a_hand_count():
    # Llama-2-7B: 2 x 32000 x 4096 embeddings;
    # per layer 4 x 4096^2 (attention) + 3 x 4096 x 11008 (MLP) + 2 x 4096 (norms)
    layer = 4 * 4096 ** 2 + 3 * 4096 * 11008 + 2 * 4096
    total = 2 * 32000 * 4096 + 32 * layer + 4096
    assert n_params(LLAMA2_7B) == {"total": total, "layer": layer} and total == 6_738_415_616
    one = memory_estimate(LLAMA2_7B, n_gpus=1, micro_batch=1, seq_len=2048)
    assert one["weights"] == pytest.approx(2 * total / 1e9) and one["optimizer"] == pytest.approx(4 * total / 1e9)
    acts = 32 * 2048 * (4 * 4096 + 4096 + 2 * 4096 + 4 * 11008) * 2 + 2048 * 32000 * 8
    assert one["activations"] == pytest.approx(acts / 1e9)
    assert one["total"] == pytest.approx((8 * total + acts) / 1e9)  # 63.96 GB: one 80 GB GPU
    eight = memory_estimate(LLAMA2_7B, n_gpus=8, micro_batch=1, seq_len=2048)
    assert eight["gradients"] == pytest.approx(4 * total / 8 / 1e9)
    assert eight["weights"] == pytest.approx((4 * total / 8 + 4 * layer) / 1e9)
    assert eight["plain_copy"] == pytest.approx(2 * total / 1e9)
    ckpt = memory_estimate(LLAMA2_7B, n_gpus=8, checkpointing=True)
    layer_acts = 2048 * (4 * 4096 + 4096 + 2 * 4096 + 4 * 11008) * 2
    assert ckpt["activations"] == pytest.approx((2048 * 32 * 4096 * 2 + layer_acts + 2048 * 32000 * 8) / 1e9)


def _free_port() -> int:
    with socket.socket() as s:  # other jobs on this machine may hold accelerate's default 29500
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _trsp(args: list[str], config: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    for _ in range(3):  # a free port can be taken by another job before the launcher binds it: try another
        launch = ([str(ACCELERATE), "launch", "--config_file", str(config), "--main_process_port", str(_free_port())]
                  if config else [sys.executable])
        run = subprocess.run([*launch, "-m", "trsp_lib.cli", *args], env=env, capture_output=True, text=True,
                             timeout=900, cwd=REPO)
        if "address already in use" not in run.stderr.lower():
            break
    return run


def _logits(path: Path, ids: torch.Tensor) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    with torch.no_grad():
        return AutoModelForCausalLM.from_pretrained(path).eval()(input_ids=ids).logits


def _ok(run: subprocess.CompletedProcess) -> None:
    if run.returncode != 0:
        pytest.fail(f"exit {run.returncode}:\n{run.stdout[-3000:]}\n{run.stderr[-5000:]}", pytrace=False)


@pytest.mark.slow
@pytest.mark.fsdp
def test_prune_under_fsdp_equals_one_process(tiny_model_dir, tmp_path):
    common = ["prune", "--model", str(tiny_model_dir), *TRAIN, "--no-baselines"]
    _ok(_trsp([*common, "--out", str(tmp_path / "one")]))
    _ok(_trsp([*common, "--out", str(tmp_path / "fsdp")], config=CPU2))
    one, fsdp = (json.loads((tmp_path / d / "result.json").read_text()) for d in ("one", "fsdp"))
    assert fsdp["removed"] == one["removed"] and len(one["removed"]) == 2
    assert [t["lm"] for t in fsdp["trajectory"]] == pytest.approx([t["lm"] for t in one["trajectory"]], rel=1e-5)
    ids = torch.randint(3, 100, (2, 24), generator=torch.Generator().manual_seed(0))
    a, b = _logits(tmp_path / "one" / "model", ids), _logits(tmp_path / "fsdp" / "model", ids)
    assert (a - b).abs().max().item() < TOL
    from trsp_lib.surgery.removal import remove_layers
    from transformers import AutoModelForCausalLM

    untrained = remove_layers(AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), one["removed"])
    with torch.no_grad():
        assert (untrained(input_ids=ids).logits - a).abs().max().item() > 100 * TOL  # the training did something
    for k, v in one["perplexity"]["trsp"].items():
        assert fsdp["perplexity"]["trsp"][k] == pytest.approx(v, rel=1e-4)


@pytest.mark.slow
@pytest.mark.fsdp
def test_compare_under_fsdp_equals_one_process(tiny_model_dir, tmp_path):
    """TRSP, a baseline and its healing fine-tune, perplexity and lm-eval zero-shot, all under FSDP
    (here with activation checkpointing, as the 70B configuration has it)."""
    ac = tmp_path / "ac.yaml"
    ac.write_text(CPU2.read_text().replace("fsdp_activation_checkpointing: false",
                                           "fsdp_activation_checkpointing: true"))
    common = ["compare", "--model", str(tiny_model_dir), *TRAIN[:-2], "--ratios", "0.34", "--methods", "trsp,shortgpt",
              "--limit", "2", "--no-speed", "--save-models"]
    _ok(_trsp([*common, "--out", str(tmp_path / "one")]))
    _ok(_trsp([*common, "--out", str(tmp_path / "fsdp")], config=ac))
    one, fsdp = ({r["method"]: r for r in json.loads((tmp_path / d / "results.json").read_text())["rows"]}
                 for d in ("one", "fsdp"))
    assert set(one) == set(fsdp) == {"dense", "trsp", "shortgpt", "shortgpt+ft"}
    for method, row in one.items():
        assert fsdp[method]["removed"] == row["removed"]
        for col in ("ppl_wiki", "ppl_news", "zs_avg"):
            assert fsdp[method][col] == pytest.approx(row[col], rel=1e-4), (method, col)
    ids = torch.randint(3, 100, (2, 24), generator=torch.Generator().manual_seed(0))
    for method in ("trsp", "shortgpt+ft"):
        a, b = (_logits(tmp_path / d / f"{method}-0.34" / "model", ids) for d in ("one", "fsdp"))
        assert (a - b).abs().max().item() < TOL, method


@pytest.mark.slow
@pytest.mark.fsdp
def test_bad_setups_fail_with_one_line(tiny_model_dir, tmp_path):
    run = _trsp(["prune", "--model", str(tiny_model_dir), *TRAIN, "--no-baselines", "--batch-size", "3",
                 "--out", str(tmp_path / "b")], config=CPU2)
    assert run.returncode != 0
    lines = [ln for ln in run.stderr.splitlines() if "trsp prune: error:" in ln]
    assert lines and "batch_size 3 does not split over 2 processes" in lines[0], run.stderr[-2000:]
    assert 'trsp_lib/' not in run.stderr.split("trsp prune: error:")[0]  # no traceback through trsp's code
    bad = tmp_path / "bad.yaml"
    bad.write_text(CPU2.read_text().replace("fsdp_config:\n",
                                            "fsdp_config:\n  fsdp_transformer_layer_cls_to_wrap: GPT2Block\n"))
    run = _trsp(["prune", "--model", str(tiny_model_dir), *TRAIN, "--no-baselines", "--out", str(tmp_path / "w")],
                config=bad)
    assert run.returncode != 0
    lines = [ln for ln in run.stderr.splitlines() if "trsp prune: error:" in ln]
    assert lines and "FSDP cannot wrap the decoder layers of LlamaForCausalLM" in lines[0], run.stderr[-2000:]
    assert "GPT2Block" in lines[0]


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "accelerate").glob("fsdp_*.yaml")), ids=lambda p: p.stem)
def test_launch_configs_are_fsdp2_on_one_node(path):
    import yaml

    cfg = yaml.safe_load(path.read_text())
    assert cfg["distributed_type"] == "FSDP" and cfg["fsdp_config"]["fsdp_version"] == 2 and cfg["num_machines"] == 1
    assert cfg["fsdp_config"]["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    n = int(path.stem.split("_")[1][3:])  # fsdp_gpu8_70b -> 8
    assert cfg["num_processes"] == n and cfg["use_cpu"] == path.stem.startswith("fsdp_cpu")


def test_several_processes_without_fsdp_are_refused(monkeypatch, capsys):
    from trsp_lib.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    assert main(["eval", "--model", "tiny-llama"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "2 processes were launched without FSDP" in err[0] and "fsdp_" in err[0]

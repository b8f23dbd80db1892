"""Zero-shot scoring: the offline tasks under stock lm-eval, and the fast engine against stock HFLM."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_stock_lm_eval_command_line_reads_the_offline_tasks_from_any_folder(tmp_path):
    """`lm_eval --include_path <repo>/data/tasks` on a saved pruned checkpoint, run from elsewhere."""
    from trsp_lib.removal import remove_layers, save_model
    from trsp_lib.tiny import tiny_model, tiny_tokenizer

    ckpt = save_model(remove_layers(tiny_model("llama", n_layers=4), [1]), tiny_tokenizer(), tmp_path / "pruned")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cmd = [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args", f"pretrained={ckpt},dtype=float32",
           "--device", "cpu", "--include_path", str(REPO / "data" / "tasks"), "--tasks", "trsp_piqa",
           "--limit", "4", "--batch_size", "4"]
    done = subprocess.run(cmd, cwd=elsewhere, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    assert done.returncode == 0, done.stderr[-3000:]
    table = done.stdout + done.stderr
    assert re.search(r"\|trsp_piqa\|.*\|acc\s*\|.*\|\s*[01]\.\d+\|", table), table[-3000:]

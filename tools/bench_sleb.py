"""SLEB's search with and without prefix reuse (`trsp_lib.baselines.shared_prefix`), timed in one run on a real model.

Times the first `--steps` greedy steps (every kept layer scored per step) both ways on the same
calibration rows, and prints the speed-up ratio (never a bare time to compare across machines),
whether the selections agree and the largest relative difference of a candidate loss.

    nice .venv/bin/python tools/bench_sleb.py --model smollm2-135m --rows 16 --seq-len 256 --steps 1
    nice .venv/bin/python tools/bench_sleb.py --rows 4 --threads 1   # short, on a shared 2-core CPU
"""
from __future__ import annotations

import argparse
import time

import torch

from trsp_lib.baselines.criteria import full_forward_losses, sleb_search
from trsp_lib.data import calibration_batches
from trsp_lib.models import load_model


def timed(fn, *args) -> tuple[tuple[float, float], tuple]:
    """((wall s, this process's CPU s), result): CPU time is less sensitive to other jobs on a shared machine."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args)
    return (time.perf_counter() - wall, time.process_time() - cpu), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--rows", type=int, default=16, help="calibration rows (the study's criterion_samples)")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--steps", type=int, default=1, help="greedy steps timed (the study's 25%% of 30 layers is 8)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (1 on a shared CPU: no thread waits for another job's core, CPU time = work)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    model, tok = load_model(a.model, device=a.device, dtype="float32")
    calib = calibration_batches(tok, a.rows, a.seq_len, source="wiki", seed=0)
    with torch.no_grad():  # warm-up: first-call costs out of both timings
        model(input_ids=calib[:1].to(model.device), use_cache=False)
    t_old, (old, old_steps) = timed(sleb_search, model, calib, a.steps, full_forward_losses)
    t_new, (new, new_steps) = timed(sleb_search, model, calib, a.steps)
    rel = max(abs(new_steps[s][i] - loss) / abs(loss)
              for s, losses in enumerate(old_steps) for i, loss in losses.items())
    print(f"{a.model} on {a.device} ({torch.get_num_threads()} threads), {a.rows} x {a.seq_len} tokens, "
          f"{a.steps} step(s)")
    print(f"full forward per candidate: {t_old[0]:8.1f} s wall {t_old[1]:8.1f} s CPU  layers {old}")
    print(f"prefix reuse:               {t_new[0]:8.1f} s wall {t_new[1]:8.1f} s CPU  layers {new}")
    print(f"speed-up {t_old[0] / t_new[0]:.2f}x wall, {t_old[1] / t_new[1]:.2f}x CPU; selections agree: {old == new}; "
          f"max relative loss difference {rel:.2e}")


if __name__ == "__main__":
    main()

"""lm-eval's zero-shot throughput at several batch sizes, on this machine, in one run.

Reports items per second and the ratio to the slowest batch size (never a bare time to compare
across machines). The fastest becomes `compare`'s default `zs_batch_size`; the batch size is not
part of any cache key (it changes the speed, not the scores: checked here too).

    .venv/bin/python tools/zs_throughput.py --model smollm2-135m --limit 40 --sizes 1,4,8,16,32
"""
from __future__ import annotations

import argparse

from trsp_lib.models import load_model
from trsp_lib.zeroshot import DEFAULT_TASKS, zero_shot


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--limit", type=int, default=40, help="items per task")
    ap.add_argument("--sizes", default="1,4,8,16,32")
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    model, tok = load_model(a.model, device=a.device, dtype="float32")
    zero_shot(model, tok, limit=4, batch_size=8)  # warm-up: task set-up, first-call costs
    rates, averages = {}, {}
    for bs in [int(b) for b in a.sizes.split(",")]:
        r = zero_shot(model, tok, DEFAULT_TASKS, limit=a.limit, batch_size=bs)
        rates[bs], averages[bs] = r["items_per_s"], r["average"]
    slowest = min(rates.values())
    print(f"{a.model} on {a.device}, {a.limit} items x {len(DEFAULT_TASKS)} tasks")
    print("batch  items/s  vs slowest  average")
    for bs, v in rates.items():
        print(f"{bs:5d}  {v:7.1f}  {v / slowest:9.2f}x  {averages[bs]:.4f}")
    print(f"fastest: batch {max(rates, key=rates.get)}; "
          f"averages agree: {len(set(round(x, 6) for x in averages.values())) == 1}")


if __name__ == "__main__":
    main()

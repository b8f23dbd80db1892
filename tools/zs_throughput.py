"""Zero-shot throughput on this machine, in one run: the fast engine against stock lm-eval, or batch sizes.

`--stock`: stock lm-eval HFLM and the fast engine (trsp_lib.scoring.SharedPrefixLM) on the same
seeded items, side by side in one process (both warmed up first; with --rounds 2 the order alternates),
items per second for each, and every item's acc and acc_norm compared. The last line reads
`ratio X.XX, identical answers N/N` (N: items, each identical in every metric it has).

    .venv/bin/python tools/zs_throughput.py --stock --model smollm2-135m --limit 200

Without `--stock`: one engine at several batch sizes, items per second and the ratio to the slowest
(the batch size is not part of any cache key: it changes the speed, not the scores; checked too).

    .venv/bin/python tools/zs_throughput.py --model smollm2-135m --limit 40 --sizes 1,4,8,16,32
"""
from __future__ import annotations

import argparse

from trsp_lib.models import load_model
from trsp_lib.scoring import TOLERANCE
from trsp_lib.zeroshot import DEFAULT_TASKS, item_answers, run_lm_eval, zero_shot


def side_by_side(model, tok, tasks: list[str], limit: int, batch_size: int, rounds: int) -> None:
    """Stock then fast (then fast then stock, ...): items/s of each, and the per-item answers compared."""
    for engine in ("stock", "fast"):  # warm-up: task set-up, first-call costs
        run_lm_eval(model, tok, tasks, 4, 0, batch_size, engine)
    seconds, items, answers, lls = {"stock": 0.0, "fast": 0.0}, {"stock": 0, "fast": 0}, {}, {}
    stats, fast_lm = {}, None
    for r in range(rounds):
        for engine in ("stock", "fast") if r % 2 == 0 else ("fast", "stock"):
            out, names, sec, lm = run_lm_eval(model, tok, tasks, limit, 0, batch_size, engine)
            seconds[engine] += sec
            items[engine] += sum(int(out["n-samples"][names[t]]["effective"]) for t in tasks)
            answers[engine] = item_answers(out, names)
            lls[engine] = {(t, s["doc_id"]): [x[0][0] for x in s["resps"]]
                           for t in tasks for s in out["samples"][names[t]]}
            stats, fast_lm = (lm.stats, lm) if engine == "fast" else (stats, fast_lm)
            print(f"round {r + 1} {engine:5s}: {sec:7.1f} s", flush=True)
    rate = {e: items[e] / seconds[e] for e in seconds}
    a, b = answers["stock"], answers["fast"]
    n = sum(len(next(iter(a[t].values()))) for t in tasks)
    same = sum(all(a[t][m][i] == b[t][m][i] for m in a[t])
               for t in tasks for i in range(len(next(iter(a[t].values())))))
    worst = max(abs(x - y) / max(abs(x), 1e-30) for k, v in lls["stock"].items() for x, y in zip(v, lls["fast"][k]))
    near = scale_gap(fast_lm, lls, names)
    for t in tasks:
        k = len(next(iter(a[t].values())))
        diff = [m for m in a[t] if a[t][m] != b[t][m]]
        print(f"{t:14s} {k:4d} items  " + ("answers identical" if not diff else f"DIFFERENT in {diff}"))
    print(f"largest relative log-likelihood difference {worst:.2e}, {near:.2e} of the near-tie scale (tolerance "
          f"{TOLERANCE[next(model.parameters()).dtype][0]:.0e}); requests {stats.get('requests', 0)}: "
          f"{stats.get('shared', 0)} shared-prefix, {stats.get('stock', 0)} left to HFLM, "
          f"{stats.get('near_tie_rows', 0)} in near-tie items re-scored by HFLM ({stats.get('restored_rows', 0)} "
          f"rows with their stock batch-mates); last round")
    print(f"stock HFLM {rate['stock']:.2f} items/s, fast {rate['fast']:.2f} items/s "
          f"({items['stock']} items each, batch size {batch_size})")
    print(f"ratio {rate['fast'] / rate['stock']:.2f}, identical answers {same}/{n}")


def scale_gap(lm, lls: dict, names: dict[str, str]) -> float:
    """The largest |stock - fast| log-likelihood over the fast engine's near-tie scale (`Score.scale`): the
    headroom of its tolerance (TOLERANCE), measured on these items. Rows HFLM scored itself have no scale."""
    scores = getattr(lm, "last_scores", {})
    scale = {key: scores[i].scale for i, key in enumerate(getattr(lm, "last_keys", [])) if i in scores}
    gaps = [abs(x - y) / scale[(names[t], d, c)] for (t, d), v in lls["stock"].items()
            for c, (x, y) in enumerate(zip(v, lls["fast"][(t, d)])) if scale.get((names[t], d, c))]
    return max(gaps, default=0.0)


def batch_sizes(model, tok, tasks: list[str], limit: int, sizes: str, engine: str, label: str) -> None:
    """One engine at several batch sizes (the tool's original mode)."""
    zero_shot(model, tok, tasks, limit=4, batch_size=8, engine=engine)  # warm-up
    rates, averages = {}, {}
    for bs in [int(b) for b in sizes.split(",")]:
        r = zero_shot(model, tok, tasks, limit=limit, batch_size=bs, engine=engine)
        rates[bs], averages[bs] = r["items_per_s"], r["average"]
    slowest = min(rates.values())
    print(f"{label}, {limit} items x {len(tasks)} tasks, engine {engine}")
    print("batch  items/s  vs slowest  average")
    for bs, v in rates.items():
        print(f"{bs:5d}  {v:7.1f}  {v / slowest:9.2f}x  {averages[bs]:.4f}")
    print(f"fastest: batch {max(rates, key=rates.get)}; "
          f"averages agree: {len(set(round(x, 6) for x in averages.values())) == 1}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--stock", action="store_true", help="stock HFLM against the fast engine, side by side")
    ap.add_argument("--limit", type=int, default=None, help="items per task (default: 200 with --stock, else 40)")
    ap.add_argument("--tasks", default=",".join(DEFAULT_TASKS))
    ap.add_argument("--batch-size", type=int, default=8, help="with --stock (compare's zs_batch_size)")
    ap.add_argument("--rounds", type=int, default=1, help="with --stock: rounds, the order alternating")
    ap.add_argument("--sizes", default="1,4,8,16,32", help="without --stock")
    ap.add_argument("--engine", default="fast", choices=("fast", "stock"), help="without --stock")
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    model, tok = load_model(a.model, device=a.device, dtype="float32")
    tasks = a.tasks.split(",")
    if a.stock:
        print(f"{a.model} on {a.device}, float32, tasks {', '.join(tasks)}", flush=True)
        side_by_side(model, tok, tasks, a.limit or 200, a.batch_size, a.rounds)
    else:
        batch_sizes(model, tok, tasks, a.limit or 40, a.sizes, a.engine, f"{a.model} on {a.device}")


if __name__ == "__main__":
    main()

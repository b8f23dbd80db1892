"""The speed chapter's numbers: dense against the same model with layers removed, at several ratios, cached,
and what the chapter reads from those records (values to glue, its figure, its table)."""
from __future__ import annotations

import copy
from datetime import datetime

NAN = float("nan")
KINDS = ("prefill", "generate")
#: The paper's end-to-end speed-ups at 25% on OPT-13B (Feng et al., 2025): latency and throughput.
PAPER = {"paper_latency": 1.35, "paper_throughput": 1.31}


def speed_by_ratio(model: str, ratios: list[float], device: str = "cpu", seed: int = 0, cached_only: bool = False,
                   **protocol) -> dict[float, dict]:
    """Dense against the same model with `layers_to_remove(ratio)` layers removed, per ratio, cached.

    The layers are the reverse-order ones: speed depends on the shape only. `protocol`: prefill_len,
    gen_batch, prompt_len, new_tokens, reps (see `speed.compare_speed`)."""
    from trsp_lib.surgery.adapters import get_layers
    from trsp_lib.baselines.criteria import reverse
    from trsp_lib.models import load_model
    from trsp_lib.surgery.removal import remove_layers
    from trsp_lib.results import cached
    from trsp_lib.speed import compare_speed
    from trsp_lib.method.trsp import layers_to_remove

    loaded: list = []

    def measure(ratio: float) -> dict:
        if not loaded:
            loaded.append(load_model(model, device=device)[0])
        net = loaded[0]
        n = layers_to_remove(ratio, len(get_layers(net)))
        pruned = remove_layers(copy.deepcopy(net), reverse(net, None, n))
        return {"n_removed": n, **compare_speed(net, pruned, seed=seed, **protocol)}

    params = {"model": model, "device": device, **protocol, "seed": seed}
    runs = {r: cached("speed", {**params, "ratio": r}, lambda r=r: measure(r), cached_only=cached_only) for r in ratios}
    return {r: v for r, v in runs.items() if v is not None}  # cached_only: the ratios measured so far


def split(records: list[dict]) -> tuple[dict[float, dict], dict | None]:
    """(the sweep's results by ratio, the comparison's own speed row or None) of `runner.section(P, "speed")`."""
    sweep = {x["params"]["ratio"]: {**x["result"], "date": x["provenance"]["date"]}
             for x in records if x["label"] != "speed"}
    row = next(({**x, "date": x["provenance"]["date"]} for x in records if x["label"] == "speed"), None)
    return dict(sorted(sweep.items())), row


def spread(run: dict, kind: str) -> tuple[float, float]:
    """The speed-up's range over the repetitions: fastest dense over slowest pruned, and the reverse."""
    dense, pruned = run["dense"][kind], run["pruned"][kind]
    return dense["min"] / pruned["max"], dense["max"] / pruned["min"]


def fixed_share(ideal: float, n_layers: int, n_removed: int) -> float:
    """The FLOP share of the part no removal shrinks (the LM head), solved from the ideal ratio:
    ideal = 1 / (s + (1 - s) * kept / layers)."""
    kept = (n_layers - n_removed) / n_layers
    return (1 / ideal - kept) / (1 - kept)


def _measurement(prefix: str, run: dict | None) -> dict:
    """speed-up, ideal and spread of both kinds, NaN when the row is missing."""
    out = {}
    for kind in KINDS:
        lo, hi = spread(run, kind) if run else (NAN, NAN)
        out.update({f"{prefix}_{kind}": run["speedup"][kind] if run else NAN, f"{prefix}_{kind}_lo": lo,
                    f"{prefix}_{kind}_hi": hi, f"{prefix}_ideal_{kind}": run["ideal"][kind] if run else NAN})
    out[f"{prefix}_dense_s"] = run["dense"]["prefill"]["median"] if run else NAN
    out[f"{prefix}_new_tokens"] = run["protocol"]["new_tokens"] if run else 0
    return out


def _verdicts(sweep: dict[float, dict], row: dict | None, ratio: float, n_layers: int) -> dict:
    """Which predictor the medians follow, and whether the study row's range holds its ideals."""
    from trsp_lib.method.trsp import layers_to_remove

    runs = [(r, v) for r, v in sweep.items()] + ([(ratio, row)] if row else [])
    closer = [abs(v["speedup"][k] - v["ideal"][k]) < abs(v["speedup"][k] - n_layers / (n_layers - layers_to_remove(
        r, n_layers))) for r, v in runs for k in KINDS]
    inside = [spread(row, k)[0] <= row["ideal"][k] <= spread(row, k)[1] for k in KINDS] if row else []
    excess = [v["speedup"]["prefill"] - v["ideal"]["prefill"] for v in sweep.values()] or [NAN]
    return {"ideal_closer_n": sum(closer), "n_medians": len(closer),
            "ideal_verdict": ("n/a" if not row else "inside" if all(inside) else "partly inside" if any(inside)
                              else "outside"),
            "prefill_excess_min": min(excess), "prefill_excess_max": max(excess),
            **{f"{k}_gap": abs(row["speedup"][k] - row["ideal"][k]) if row else NAN for k in KINDS}}


def _hours(a: str, b: str) -> float:
    stamp = "%Y-%m-%dT%H:%M:%S%z"
    return abs((datetime.strptime(a, stamp) - datetime.strptime(b, stamp)).total_seconds()) / 3600


def values(sweep: dict[float, dict], row: dict | None, ratio: float, n_layers: int) -> dict:
    """Everything the chapter states, by glue name. The study's speed-up (`speedup_prefill`, `speedup_generate`)
    is the comparison's own row (the one chapter 4's table shows); the sweep's point at the same ratio
    (`sweep_prefill`, ...) is a second measurement with fewer generated tokens. NaN where a row is missing."""
    from trsp_lib.method.trsp import layers_to_remove

    n = layers_to_remove(ratio, n_layers)
    at = sweep.get(ratio)
    study, point = _measurement("speedup", row), _measurement("sweep", at)
    inside = [spread(v, k)[0] <= v["ideal"][k] <= spread(v, k)[1] for v in sweep.values() for k in KINDS]
    overlap = row and at and all(max(spread(row, k)[0], spread(at, k)[0]) <= min(spread(row, k)[1], spread(at, k)[1])
                                 for k in KINDS)
    top = max(sweep) if sweep else None
    first = next(iter(sweep.values()), None)
    return {
        **study, **point, **_verdicts(sweep, row, ratio, n_layers), **PAPER, "speed_ratio": ratio,
        "n_layers": n_layers, "n_removed": n,
        "layer_ratio": n_layers / (n_layers - n), "ideal_prefill": study["speedup_ideal_prefill"],
        "ideal_generate": study["speedup_ideal_generate"],
        "head_share": fixed_share(study["speedup_ideal_prefill"], n_layers, n) if row else NAN,
        "n_ratios": len(sweep), "ideal_inside_n": sum(inside), "n_points": len(inside),
        "prefill_above_n": sum(v["speedup"]["prefill"] > v["ideal"]["prefill"] for v in sweep.values()),
        "generate_below_n": sum(v["speedup"]["generate"] < v["ideal"]["generate"] for v in sweep.values()),
        "top_ratio": top or NAN, "top_prefill": sweep[top]["speedup"]["prefill"] if sweep else NAN,
        "top_generate": sweep[top]["speedup"]["generate"] if sweep else NAN,
        "top_ideal": sweep[top]["ideal"]["prefill"] if sweep else NAN,
        "spreads_verdict": "overlap" if overlap else "do not overlap",
        "hours_apart": _hours(row["date"], at["date"]) if row and at else NAN,
        **{k: first["protocol"][k] if first else 0 for k in ("prefill_len", "gen_batch", "prompt_len", "reps")},
    }


def figure(sweep: dict[float, dict], row: dict | None, ratio: float, n_layers: int):
    """Measured speed-up against the FLOP ideal and the naive layer ratio, prefill and generation side by side;
    the comparison's own row drawn on top at its ratio."""
    import matplotlib.pyplot as plt
    from trsp_lib.method.trsp import layers_to_remove

    from .style import figsize

    fig, axes = plt.subplots(1, 2, figsize=figsize(0.5), sharey=True, layout="constrained")
    proto = next(iter(sweep.values()))["protocol"] if sweep else {}
    titles = {"prefill": f"prefill, {proto.get('prefill_len')} tokens",
              "generate": f"generation, {proto.get('gen_batch')} × ({proto.get('prompt_len')} + "
                          f"{proto.get('new_tokens')}) tokens"}
    x = [100 * r for r in sweep]
    naive = [n_layers / (n_layers - layers_to_remove(r, n_layers)) for r in sweep]
    for ax, kind in zip(axes, KINDS):
        med = [v["speedup"][kind] for v in sweep.values()]
        lo, hi = zip(*(spread(v, kind) for v in sweep.values())) if sweep else ((), ())
        ax.errorbar(x, med, yerr=[[m - a for m, a in zip(med, lo)], [b - m for m, b in zip(med, hi)]], fmt="o-",
                    color="C0", capsize=3, label="measured (sweep), range of repetitions")
        ax.plot(x, [v["ideal"][kind] for v in sweep.values()], "k--", label="FLOP ideal")
        ax.plot(x, naive, ":", color="0.45", label="layer ratio L / (L − n)")
        if row:
            lo_r, hi_r = spread(row, kind)
            ax.errorbar([100 * ratio + 1], [row["speedup"][kind]], yerr=[[row["speedup"][kind] - lo_r],
                        [hi_r - row["speedup"][kind]]], fmt="D", color="C3", capsize=3, zorder=5,
                        label=f"comparison's row ({row['protocol']['new_tokens']} new tokens)")
        ax.set_title(titles[kind])
        ax.set_xlabel("layers removed (%)")
    axes[0].set_ylabel("speed-up over dense (×)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=2)
    return fig


def table(sweep: dict[float, dict], row: dict | None, ratio: float, n_layers: int):
    """Per measurement: layers removed, speed-up and FLOP ideal of both kinds, generation throughput."""
    import pandas as pd

    from trsp_lib.method.trsp import layers_to_remove

    runs = [("sweep", r, v) for r, v in sweep.items()] + ([("comparison's row", ratio, row)] if row else [])
    return pd.DataFrame([{
        "measurement": f"{name}, {v['protocol']['new_tokens']} new tokens",
        "layers removed": f"{layers_to_remove(r, n_layers)} ({r:.1%})".replace(".0%", "%"),
        "prefill": v["speedup"]["prefill"], "prefill ideal": v["ideal"]["prefill"],
        "generation": v["speedup"]["generate"], "generation ideal": v["ideal"]["generate"],
        "dense tokens/s": v["dense"]["generate"]["tokens_per_s"],
        "pruned tokens/s": v["pruned"]["generate"]["tokens_per_s"]} for name, r, v in runs])


def paper_run(ratios: list[float], reps: int, prompt_len: int) -> dict:
    """The rerun note's paper-scale entry: this chapter on LLaMA-2-7B with the paper's GPU protocol."""
    import json

    from .scaling import LLAMA2_CONFIGS, n_params

    big, gpu = "meta-llama/Llama-2-7b-hf", {"prefill_len": 2048, "gen_batch": 64, "prompt_len": prompt_len,
                                            "new_tokens": 128, "reps": reps}
    per_rep = 2 * (gpu["prefill_len"] + gpu["gen_batch"] * (prompt_len + gpu["new_tokens"]))  # dense and pruned
    params = json.dumps({"model": big, "study": {"device": "cuda", "speed": gpu}})
    return {"command": f"HF_HUB_OFFLINE=0 papermill notebooks/06_speed.ipynb out.ipynb -y '{params}'",
            "n_params": n_params(LLAMA2_CONFIGS[big])["total"], "train_tokens": 0,
            "forward_tokens": len(ratios) * (reps + 1) * per_rep, "what": "LLaMA-2-7B, the paper's speed protocol",
            "note": "generation is bound by memory, not FLOPs: count minutes rather than this figure"}

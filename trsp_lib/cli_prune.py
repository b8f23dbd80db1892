"""`trsp prune`: TRSP on one model, its perplexities, a stock checkpoint, and the untrained controls.

The run is one cached result (`OUT/result.json`, via `results.stored`); the controls go through the
same pipelines as `trsp compare` (`trsp_lib.pipelines`).
"""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

from .cli import eval_texts
from .evaluation import perplexities


def _dense_ppl(name: str, model, tok, texts: dict[str, str], evals) -> dict[str, float]:
    """Dense perplexities of a built-in model are cached (under the model cache): every run would recompute them."""
    from .data import window_key
    from .models import BUILTIN_MODELS, cache_dir
    from .results import cached

    if name not in BUILTIN_MODELS or any(Path(t).exists() for t in texts.values()):
        return perplexities(model, tok, texts, evals, "dense ppl")
    scored = {k: v for k, v in evals.key().items() if k != "eval_batch_size"}  # batching does not change the result
    params = {"model": name, "texts": texts, "eval": scored, **window_key(tok)}
    return cached("dense_perplexity", params, lambda: perplexities(model, tok, texts, evals, "dense ppl"),
                  root=cache_dir())


def cmd_prune(args, config) -> int:
    """`config`: (TRSPConfig, EvalSettings) from the profile and the flags."""
    from . import __version__
    from .data import window_key
    from .models import load_tokenizer
    from .provenance import param_key
    from .results import stored
    from .method.trsp import config_key

    cfg, evals = config
    out = Path(args.out)
    texts = eval_texts(args)
    key = param_key({"model": args.model, "version": __version__, "config": config_key(cfg), "eval": evals.key(),
                     "texts": texts, "baselines": args.baselines, "ft": args.finetune_baselines,
                     **window_key(load_tokenizer(args.model))})
    ran: list[bool] = []
    record = stored(out / "result.json", key, lambda: ran.append(True) or _prune_run(args, cfg, evals, texts),
                    force=args.force or not (out / "model").exists())
    if not ran:
        print(f"{out / 'result.json'} already holds this run (same parameters); reusing it. Use --force to recompute.")
    _summary(record)
    if ran:
        print(f"wrote {out / 'result.json'} and {record['checkpoint']}/ "
              "(loads with AutoModelForCausalLM.from_pretrained)")
    return 0


def _prune_run(args, cfg, evals, texts: dict[str, str]) -> dict:
    """TRSP on the model, its perplexities, the saved checkpoint and (with --baselines) the untrained controls."""
    import torch

    from .data import calibration_batches
    from .models import load_model
    from .surgery.removal import save_model
    from .method.trsp import prune

    t_start = time.perf_counter()
    print(f"loading {args.model} on {cfg.device} ...")
    model, tok = load_model(args.model, device=cfg.device, dtype=args.dtype)
    calib = calibration_batches(tok, cfg.n_samples, cfg.seq_len, source=cfg.calib, seed=cfg.seed)
    print(f"calibration: {cfg.n_samples} x {cfg.seq_len} tokens of {cfg.calib!r}; "
          f"evaluation: {evals.eval_max_tokens or 'all'} tokens per split, windows of {evals.eval_seq_len}")
    ppl = {"dense": _dense_ppl(args.model, model, tok, texts, evals)}
    result = prune(model, calib, cfg)
    ppl["trsp"] = perplexities(model, tok, texts, evals, "pruned ppl")
    save_dir = save_model(model, tok, Path(args.out) / "model")
    del model
    result.model = None  # free the pruned model before the baselines load theirs
    baseline_layers: dict = {}
    if args.baselines:
        rows, baseline_layers = _baselines(args, cfg, result, calib, tok, texts, evals)
        ppl.update(rows)
    return {
        "model": args.model, "profile": args.profile, "removed": result.removed,
        "kept": result.kept, "n_layers": result.n_layers, "perplexity": ppl, "eval": evals.key(),
        "baseline_layers": baseline_layers,
        "identity_gap": {str(k): v for k, v in result.identity_gap.items()},
        "final_scales": result.final_scales, "timings": {**result.timings, "wall_s": time.perf_counter() - t_start},
        "checkpoint": str(save_dir), "config": asdict(cfg),
        "trajectory": result.trajectory, "torch_threads": torch.get_num_threads(),
    }


def _baselines(args, cfg, result, calib, tok, texts, evals) -> tuple[dict, dict]:
    """The same number of layers removed with no training: TRSP's own set, the last n before the
    final layer, and ShortGPT's choice; with --finetune-baselines also ShortGPT's choice followed by
    plain fine-tuning with TRSP's budget (same optimizer steps, batches and tokens). The same
    pipelines as `trsp compare` (trsp_lib.pipelines), each on its own copy of the dense model."""
    import copy

    from .models import load_model
    from .pipelines import Job, finish, parse, select
    from .method.trsp import budget

    n = len(result.removed)
    runs = [("same layers, untrained", "given", result.removed), (f"last {n} before final, untrained", "reverse", None),
            ("shortgpt, untrained", "shortgpt", None)]
    if args.finetune_baselines:
        runs.append(("shortgpt + equal-budget ft", "shortgpt+ft", None))
    out, chosen = {}, {}
    dense, _ = load_model(args.model, device=cfg.device, dtype=args.dtype)
    for label, pipeline, layers in runs:
        p = parse(pipeline)
        job = Job(copy.deepcopy(dense), n, cfg, calib, 16, budget(cfg, n).steps, dense=dense)
        info = select(p, job, layers or chosen.get(p.base))
        finish(p, job)
        chosen.setdefault(p.base, info["removed"])
        chosen[label] = info["removed"]
        print(f"{label}: removes {sorted(info['removed'])}")
        out[label] = perplexities(job.model, tok, texts, evals, f"{label} ppl")
    return out, {label: chosen[label] for label, *_ in runs}


def _num(v: float) -> str:
    return f"{v:.2f}" if v < 1e6 else f"{v:.2e}"


def _summary(r: dict) -> None:
    print(f"\nTRSP on {r['model']}: removed {len(r['removed'])} of {r['n_layers']} layers, "
          f"in selection order {r['removed']}")
    names = list(next(iter(r["perplexity"].values())).keys())
    width = max(len(k) for k in r["perplexity"]) + 2
    print("perplexity".ljust(width) + "".join(f"{n:>12}" for n in names))
    for label, row in r["perplexity"].items():
        print(label.ljust(width) + "".join(f"{_num(row[n]):>12}" for n in names))
    gaps = ", ".join(f"{k}: {v:.3f}" for k, v in r.get("identity_gap", {}).items())
    if gaps:
        print(f"||X_out - X_in|| / ||X_in|| of the removed layers at the end of stage 2: {gaps}")
    t = r["timings"]
    print(f"time: stage 1 {t['stage1_s']:.0f} s, stage 2 {t['stage2_s']:.0f} s, whole run {t['wall_s']:.0f} s; "
          f"peak RSS {r['peak_rss_gb']:.2f} GB")

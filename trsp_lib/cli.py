"""`trsp prune` and `trsp eval`: the command-line face of the library.

Every `TRSPConfig` field is a flag (`--lambda1`, `--gate`, `--stage2-fade/--no-stage2-fade`, ...);
a `--profile` fills in a named set first.  Bad input ends with one clear line and exit code 2.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import fields
from pathlib import Path

EXIT_BAD_INPUT = 2


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


DEVICE_HELP = "cpu, cuda, cuda:N, or auto (accelerate's device_map: the layers spread over every visible GPU)"


#: Config fields set per pipeline row (`compare --heal-last`), not for every row: no config flag of their own.
PIPELINE_FIELDS = ("heal_last",)


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    from .method.trsp import TRSPConfig

    g = p.add_argument_group("TRSP parameters (default: the profile's value, else the TRSPConfig default)")
    for f in fields(TRSPConfig):
        if f.name in PIPELINE_FIELDS:
            continue
        default = f.default
        if isinstance(default, bool):
            g.add_argument(_flag(f.name), action=argparse.BooleanOptionalAction, default=None,
                           help=f"(default {default})")
        else:
            kind = {int: int, float: float, str: str}.get(type(default), int if f.name == "n_remove" else str)
            extra = f"{DEVICE_HELP}; " if f.name == "device" else ""
            g.add_argument(_flag(f.name), type=kind, default=None, help=f"{extra}(default {default})")


def _config(args: argparse.Namespace):
    """(TRSPConfig, EvalSettings): the profile, then every flag the user set."""
    from .profiles import EVAL_KEYS, load
    from .method.trsp import TRSPConfig

    names = [f.name for f in fields(TRSPConfig) if f.name not in PIPELINE_FIELDS] + list(EVAL_KEYS)
    cfg, evals = load(args.profile, **{k: getattr(args, k, None) for k in names})
    from .surgery.distributed import check_batch
    check_batch(cfg.batch_size)  # under accelerate launch: fail before loading anything
    return cfg, evals


def _cmd_prune(args) -> int:
    from .cli_prune import cmd_prune
    return cmd_prune(args, _config(args))


def cmd_eval(args) -> int:
    from .evaluation import perplexities
    from .models import load_model
    from .profiles import EVAL_KEYS, load

    _, evals = load(args.profile, **{k: getattr(args, k) for k in EVAL_KEYS})
    model, tok = load_model(args.model, device=args.device, dtype=args.dtype)
    if args.remove_layers:
        from .surgery.removal import remove_layers

        remove_layers(model, [int(i) for i in args.remove_layers.split(",")])
        print(f"removed layers {args.remove_layers} (no training)")
    ppl = perplexities(model, tok, eval_texts(args), evals, "ppl")
    n_layers = getattr(model.config, "num_hidden_layers", "?")
    print(f"{args.model}: {n_layers} layers; perplexity (windows of {evals.eval_seq_len} tokens, "
          f"{evals.eval_max_tokens or 'all'} tokens per text)")
    for name, v in ppl.items():
        print(f"  {name:>12}: {v:.2f}")
    return 0


def cmd_speed(args) -> int:
    from .models import load_model
    from .speed import compare_speed

    dense, _ = load_model(args.dense, device=args.device, dtype=args.dtype)
    pruned, _ = load_model(args.pruned, device=args.device, dtype=args.dtype)
    r = compare_speed(dense, pruned, prefill_len=args.prefill_len, gen_batch=args.gen_batch,
                      new_tokens=args.new_tokens, reps=args.reps)
    n_dense, n_pruned = dense.config.num_hidden_layers, pruned.config.num_hidden_layers
    print(f"{args.dense} ({n_dense} layers) vs {args.pruned} ({n_pruned} layers), median of {args.reps}, interleaved:")
    for kind, unit in (("prefill", f"batch 1 x {args.prefill_len} tokens"),
                       ("generate", f"batch {args.gen_batch}, {r['protocol']['prompt_len']} + "
                                    f"{args.new_tokens} tokens")):
        d, p = r["dense"][kind], r["pruned"][kind]
        print(f"  {kind:8} ({unit}): dense {d['median']:.3f} s [{d['min']:.3f}-{d['max']:.3f}], "
              f"pruned {p['median']:.3f} s [{p['min']:.3f}-{p['max']:.3f}]  speed-up {r['speedup'][kind]:.2f}x "
              f"(FLOP ideal {r['ideal'][kind]:.2f}x)")
    return 0


def cmd_compare(args) -> int:
    from .compare import compare, table
    from .surgery.distributed import check_speed
    from .method.trsp import TRSPConfig

    check_speed(args.speed)  # under accelerate launch: --no-speed
    overrides = {f.name: getattr(args, f.name) for f in fields(TRSPConfig)
                 if f.name not in ("ratio", "n_remove") and getattr(args, f.name, None) is not None}
    tasks = args.tasks.split(",") if args.tasks else None
    rows = compare(model=args.model, ratios=args.ratios, methods=args.methods, out=args.out, profile=args.profile,
                   finetune_baselines=(args.finetune_methods if args.finetune and args.finetune_methods
                                       else args.finetune),
                   limit=None if args.limit < 0 else args.limit,
                   criterion_samples=args.criterion_samples, speed=args.speed, save_models=args.save_models,
                   force=args.force, dtype=args.dtype, overrides=overrides, zs_seed=args.zs_seed,
                   cached_only=args.cached_only, pipelines=args.pipelines, eval_texts=eval_texts(args),
                   lin={"alpha": args.lin_alpha, "sequential": args.lin_sequential},
                   heal={"temperature": args.heal_temperature, "lr": args.heal_lr, "last": args.heal_last},
                   **({"tasks": tasks} if tasks else {}))
    import pandas as pd
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.float_format", "{:.3g}".format):
        print(table(rows).to_string(index=False))
    print(f"wrote {args.out}/results.csv and {args.out}/results.json")
    return 0


def eval_texts(args: argparse.Namespace) -> dict[str, str]:
    """--text SOURCE (labelled by its file name) or --text LABEL=SOURCE, e.g. wiki=wikitext2; default wiki, news."""
    pairs = [t.split("=", 1) if "=" in t and not Path(t).exists() else (Path(t).name, t) for t in args.text or []]
    return dict(pairs) if pairs else {"wiki": "wiki", "news": "news"}


def _add_eval_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--text", action="append", help="a text to score, FILE or LABEL=SOURCE (e.g. wiki=wikitext2; "
                   "repeatable); default: the built-in wiki and news test splits")
    p.add_argument("--eval-seq-len", type=int, default=None, help="perplexity window length")
    p.add_argument("--eval-max-tokens", type=int, default=None, help="score only the first N tokens of each text")
    p.add_argument("--eval-batch-size", type=int, default=None)
    p.add_argument("--dtype", default=None, help="float32 (CPU default) or bfloat16 (CUDA default)")


def _add_compare_parser(sub) -> None:
    c = sub.add_parser("compare", help="dense, TRSP and every baseline (+ equal-budget fine-tune) under one protocol")
    c.add_argument("--model", default="smollm2-135m")
    c.add_argument("--ratios", type=float, nargs="+", default=[0.25], help="pruning ratios, e.g. 0.125 0.25 0.375 0.5")
    c.add_argument("--methods", default="all",
                   help="all, or a comma list of trsp,shortgpt,angular,sleb,ppl,taylor,laco,reverse,random")
    c.add_argument("--out", default="runs/compare")
    c.add_argument("--profile", default="default",
                   help="TRSP configuration, calibration and evaluation settings for every method")
    c.add_argument("--finetune", action=argparse.BooleanOptionalAction, default=True,
                   help="also each baseline + plain fine-tuning with TRSP's step/token budget (rows 'method+ft')")
    c.add_argument("--finetune-methods", default=None,
                   help="only these baselines get a +ft row, comma list (default: every baseline)")
    c.add_argument("--tasks", default=None,
                   help="zero-shot tasks, comma list (default: piqa,winogrande,hellaswag,arc_easy,arc_challenge)")
    c.add_argument("--limit", type=int, default=50, help="items per zero-shot task, seeded, same for every method; "
                   "0 = skip zero-shot, -1 = full sets (hours on CPU)")
    c.add_argument("--zs-seed", type=int, default=0)
    c.add_argument("--criterion-samples", type=int, default=16,
                   help="calibration sequences given to the baseline criteria")
    c.add_argument("--speed", action=argparse.BooleanOptionalAction, default=True)
    c.add_argument("--save-models", action="store_true", help="also write OUT/<method>-<ratio>/model/")
    c.add_argument("--force", action="store_true", help="recompute rows even when OUT/rows/ holds them")
    c.add_argument("--cached-only", action="store_true", help="compute nothing: tabulate the rows already in OUT/rows/")
    c.add_argument("--dtype", default=None)
    c.add_argument("--pipelines", default=None,
                   help="further rows selection[+lin][+ft|+kd], comma list, e.g. sleb+lin,sleb+lin+kd,trsp+lin,trsp:kd")
    c.add_argument("--lin-alpha", type=float, default=0.0, help="ridge of the lin map, relative to mean diag(M^T M)")
    c.add_argument("--lin-sequential", action=argparse.BooleanOptionalAction, default=False,
                   help="fit each run's map on the already-compensated model against the dense states (default: off, "
                        "every map from the dense model's states: the study's choice on validation, chapter 9)")
    c.add_argument("--heal-temperature", type=float, default=1.0, help="KD temperature of the +kd rows and trsp:kd")
    c.add_argument("--heal-lr", type=float, default=None,
                   help="learning rate of the pipelines' healing (default: the profile's lr, 2e-5 on the CPU "
                        "profiles). This is NOT the study's choice: its searches on validation chose 1e-4 for +ft "
                        "and 3e-4 for +kd on SmolLM2-135M at 25%% (chapter 9); the best lr depends on the loss, the "
                        "model and the budget, so search it on your own validation text")
    c.add_argument("--heal-last", type=int, default=0,
                   help="heal only the last k layers and the LM head (0: every weight)")
    c.add_argument("--text", action="append", help="evaluation text LABEL=SOURCE (repeatable; column ppl_LABEL), e.g. "
                   "wiki=wikitext2 (hub); default wiki=wiki and news=news, the built-in test splits")
    _add_config_flags(c)
    c.set_defaults(func=cmd_compare)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trsp",
                                     description="TRSP layer pruning of Hugging Face causal LMs, offline by default.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prune", help="prune a model with TRSP and save it as a plain Hugging Face checkpoint")
    p.add_argument("--model", default="smollm2-135m",
                   help="built-in name (smollm2-135m, gemma3-270m), HF name or local dir")
    p.add_argument("--out", required=True, help="output directory: result.json and model/")
    p.add_argument("--profile", default="default", help="named parameter set: default, literal (the paper's method), "
                   "paper-scale (its data and steps, our method), tiny")
    p.add_argument("--baselines", action=argparse.BooleanOptionalAction, default=True,
                   help="also score the same layers and the last n layers removed with no training")
    p.add_argument("--finetune-baselines", action="store_true",
                   help="also fine-tune ShortGPT's choice with TRSP's training budget (the equal-budget control)")
    p.add_argument("--force", action="store_true", help="recompute even if OUT/result.json holds this run")
    _add_eval_flags(p)
    _add_config_flags(p)
    p.set_defaults(func=_cmd_prune)
    e = sub.add_parser("eval", help="perplexity of a model on the built-in test splits or on text files")
    e.add_argument("--model", required=True)
    e.add_argument("--device", default="cpu", help=DEVICE_HELP)
    e.add_argument("--profile", default="default", help="takes the evaluation settings of this profile")
    e.add_argument("--remove-layers", default=None, help="comma-separated layer indices to delete first, e.g. 21,22,23")
    _add_eval_flags(e)
    e.set_defaults(func=cmd_eval)
    sp = sub.add_parser("speed", help="prefill latency and generation throughput, dense vs pruned, interleaved")
    sp.add_argument("--dense", default="smollm2-135m")
    sp.add_argument("--pruned", required=True, help="a pruned checkpoint, e.g. runs/smollm2-25/model")
    sp.add_argument("--device", default="cpu", help=DEVICE_HELP)
    sp.add_argument("--dtype", default=None)
    sp.add_argument("--prefill-len", type=int, default=256, help="GPU protocol of the paper: 2048")
    sp.add_argument("--gen-batch", type=int, default=4, help="GPU protocol of the paper: 64")
    sp.add_argument("--new-tokens", type=int, default=128, help="the paper's GPU protocol also uses 128")
    sp.add_argument("--reps", type=int, default=5)
    sp.set_defaults(func=cmd_speed)
    _add_compare_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    from .surgery.adapters import UnsupportedArchitecture
    from .data import DataError
    from .models import ModelNotFound
    from .method.trsp import TrainingDiverged

    try:
        from .surgery.distributed import start
        start()  # under accelerate launch with FSDP: join the process group, pick this rank's GPU
        return args.func(args)
    except (ValueError, DataError, ModelNotFound, UnsupportedArchitecture, TrainingDiverged,
            FileNotFoundError, FloatingPointError) as err:
        print(f"trsp {args.command}: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted; finished results are on disk, a rerun reuses them", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

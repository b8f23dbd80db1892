"""Every method under one protocol: same model, calibration tokens, removal code and evaluation.

`compare` runs the dense model, TRSP and each baseline criterion (optionally followed by plain
fine-tuning with TRSP's exact step and token budget, the "+ft" rows), scores each on in- and
out-of-domain perplexity and zero-shot accuracy, and writes one row per (method, ratio). Each row
is its own JSON file under OUT/rows/, keyed by a hash of everything that determines it and the
library version (in the file name): a rerun reuses finished rows and computes only new ones.
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .criteria import CRITERIA, EDITS_WEIGHTS, random_layers
from .data import calibration_batches, eval_tokens, window_key
from .evaluation import perplexity
from .models import count_layers, load_model, load_tokenizer
from .profiles import EVAL_KEYS, get_profile
from .provenance import param_key, peak_rss_gb, provenance, write_json_atomic
from .results import fresh, results_dir
from .removal import remove_layers, save_model
from .speed import compare_speed
from .compensation import compensate, compensate_removed
from .trsp import TRSPConfig, config_key, finetune, prune, step_budget
from .zeroshot import DEFAULT_TASKS, TASKS_VERSION, zero_shot

ALL_METHODS = ("trsp",) + tuple(CRITERIA)
DOMAINS = ("wiki", "news")
VAL_DOMAINS = ("wiki_val", "news_val")  # scored on the pipeline rows: every tuning choice is read off these
EDIT_STEPS = ("lin",)  # closed-form weight edits after a selection (trsp_lib.compensation)
HEAL_STEPS = ("ft", "kd")  # healing with TRSP's step and token budget: LM loss, or distillation from the dense model
LIN_DEFAULT = {"alpha": 0.0, "sequential": True}
HEAL_DEFAULT = {"temperature": 1.0, "lr": None}  # of the pipeline rows' healing (and trsp:kd); lr None = the profile's


def parse_pipeline(label: str) -> tuple[str, list[str], str | None]:
    """'sleb+lin+kd' -> ('sleb', ['lin'], 'kd'); the selection may be 'trsp:kd' (TRSP, KD loss in stage 2)."""
    selection, *steps = label.split("+")
    method = selection.split(":")[0]
    if method not in ALL_METHODS or selection not in (method, "trsp:kd"):
        raise ValueError(f"pipeline {label!r}: unknown selection {selection!r}; choose from {', '.join(ALL_METHODS)}, trsp:kd")
    heal = steps.pop() if steps and steps[-1] in HEAL_STEPS else None
    bad = [x for x in steps if x not in EDIT_STEPS]
    if bad or (method in EDITS_WEIGHTS and steps):
        raise ValueError(f"pipeline {label!r}: steps must be {'/'.join(EDIT_STEPS)} then one of "
                         f"{'/'.join(HEAL_STEPS)} (and LaCo's merge takes no edits); got {bad or steps}")
    return selection, steps, heal


def resolve_methods(methods: str | list[str] | tuple[str, ...]) -> list[str]:
    names = methods.split(",") if isinstance(methods, str) else list(methods)
    if names in (["all"], ("all",)):
        return list(ALL_METHODS)
    unknown = [m for m in names if m not in ALL_METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from all, {', '.join(ALL_METHODS)}")
    return names


def _evaluate(model, tok, cfg: TRSPConfig, evals: dict, zs: dict | None, validation: bool = False) -> dict[str, Any]:
    """Perplexity on both domains (in-domain = the calibration text's; `validation` adds the validation
    texts, whole, in the same windows) and zero-shot accuracy."""
    row: dict[str, Any] = {}
    for domain in DOMAINS + (VAL_DOMAINS if validation else ()):
        ids = eval_tokens(tok, domain, evals.get("eval_max_tokens"))
        tag = "in" if domain.removesuffix("_val") == cfg.calib else "out"
        row[f"ppl_{domain}"] = perplexity(model, tok, ids, seq_len=evals["eval_seq_len"],
                                          batch_size=evals["eval_batch_size"], desc=f"ppl {domain} ({tag}-domain)")
    if zs is not None:
        r = zero_shot(model, tok, **zs)
        row["zs_avg"] = r["average"]
        for task, metrics in r["tasks"].items():
            for m in ("acc", "acc_norm"):
                if m in metrics:
                    row[f"zs_{task}_{m}"] = metrics[m]
        row["zs_average_metric"] = r["average_metric"]
        row["zs_n"] = {t: m["n"] for t, m in r["tasks"].items()}
    return row


def select_and_remove(model, method: str, n: int, calib: torch.Tensor, cfg: TRSPConfig, criterion_samples: int,
                      layers: list[int] | None) -> dict[str, Any]:
    """Select (or reuse `layers`), edit and delete in place; returns what a row records about the pruning.

    `method`: "trsp", a `CRITERIA` name, or any label when `layers` is given. The one selection path
    of the study: `compare` and `trsp prune --baselines` both go through it."""
    t0 = time.perf_counter()
    extra: dict[str, Any] = {}
    if method == "trsp":
        result = prune(model, calib, cfg)
        layers = result.removed
        extra = {"final_scales": result.final_scales, "identity_gap": {str(k): v for k, v in result.identity_gap.items()},
                 "trajectory": result.trajectory, "timings": result.timings}
    else:
        if layers is None or method in EDITS_WEIGHTS:  # LaCo's merged weights must be rebuilt
            if method == "random":
                layers = random_layers(model, None, n, seed=cfg.seed)
            else:
                layers = CRITERIA[method](model, calib[:criterion_samples], n)
        remove_layers(model, layers)
    return {"removed": [int(i) for i in layers], "prune_s": time.perf_counter() - t0, **extra}


def _twin(ratio_rows: dict[str, dict], method: str, removed: list[int], ft: bool) -> dict | None:
    """An earlier row at this ratio whose model is necessarily identical: a selection-only method
    (no training, no weight edits) that removed the same set of layers, with the same +ft or not.
    SLEB and Taylor+ often agree; re-scoring and re-fine-tuning them would only repeat the work."""
    if method == "trsp" or method in EDITS_WEIGHTS:
        return None
    for label, row in ratio_rows.items():
        m = label.removesuffix("+ft")
        if (not label.startswith("_") and m != "trsp" and m not in EDITS_WEIGHTS and label.endswith("+ft") == ft
                and sorted(row["removed"]) == sorted(removed)):
            return row
    return None


def compare(model: str = "smollm2-135m", ratios: tuple[float, ...] | list[float] = (0.25,),
            methods: str | list[str] = "all", out: str | Path | None = None, profile: str = "default",
            finetune_baselines: bool | str | list[str] = True, tasks: tuple[str, ...] | list[str] = DEFAULT_TASKS,
            limit: int | None = 50, zs_seed: int = 0, zs_batch_size: int = 8, criterion_samples: int = 16,
            speed: bool = True, save_models: bool = False, force: bool = False, dtype: str | None = None,
            overrides: dict | None = None, cached_only: bool = False, pipelines: str | list[str] | None = None,
            lin: dict | None = None, heal: dict | None = None) -> list[dict]:
    """Run and score every (method, ratio); returns the rows (also written to OUT/results.{json,csv}
    when `out` is given; without it, rows are cached under the results directory, see `default_out`).

    `profile` and `overrides` set the TRSP configuration, which also fixes the calibration data,
    the fine-tune budget and the evaluation windows shared by every method. `limit` items per
    zero-shot task (seeded, the same items for every row; None = full sets, hours on a CPU).
    `finetune_baselines`: True (every baseline gets a +ft row), False, or the methods that do.
    `criterion_samples` calibration rows feed the baseline criteria (SLEB re-scores every layer per step).
    `cached_only` computes nothing: the table of the rows that exist (e.g. while a long run is going).
    `pipelines`: further rows as labels selection[+lin][+ft|+kd] (e.g. "sleb+lin+kd", "trsp+lin",
    "trsp:kd"), computed after the plain rows on the same calibration tokens; `lin` sets the
    compensation ({"alpha": 0.0, "sequential": True}); `heal` the pipelines' healing ({"temperature": 1.0,
    "lr": None}), which enters only those rows' keys (the plain rows keep theirs).
    """
    if overrides is not None and not isinstance(overrides, dict):
        raise TypeError(f"overrides must be a dict of TRSPConfig fields, got {type(overrides).__name__} {overrides!r}; "
                        "from papermill pass it inside -y, e.g. -y '{\"overrides\": {\"lambda1\": 0.02}}' (-p passes a string)")
    methods = resolve_methods(methods)
    pipelines = [p for p in (pipelines.split(",") if isinstance(pipelines, str) else pipelines or []) if p]
    for p in pipelines:
        parse_pipeline(p)
    lin = {**LIN_DEFAULT, **(lin or {})}
    heal = {**HEAL_DEFAULT, **(heal or {})}
    tuned = (methods if finetune_baselines is True else [] if finetune_baselines is False
             else resolve_methods(finetune_baselines))  # which baselines also get a +ft row
    prof = get_profile(profile)
    evals = {k: prof.pop(k) for k in EVAL_KEYS if k in prof}
    base_cfg = TRSPConfig.from_dict({**prof, **(overrides or {})})
    for r in ratios:
        if not 0.0 < r < 1.0:
            raise ValueError(f"ratios must be in (0, 1), got {r}")
    write_tables = out is not None  # notebooks (out=None) share cached rows and print their own tables
    out = Path(out) if out is not None else default_out(model)
    force = force or fresh()
    zs = None if limit == 0 else {"tasks": tuple(tasks), "limit": limit, "seed": zs_seed, "batch_size": zs_batch_size}
    zs_key = zs and {**{k: v for k, v in zs.items() if k != "batch_size"}, "tasks_version": TASKS_VERSION}
    shared = {"model": model, "version": __version__, "eval": evals, "zero_shot": zs_key,
              "calib": [base_cfg.calib, base_cfg.n_samples, base_cfg.seq_len, base_cfg.seed]}
    shared.update(window_key(load_tokenizer(model)))  # windows that start with BOS (data.bos_prefix)
    params = {"model": model, "ratios": list(ratios), "methods": methods, "profile": profile, "overrides": overrides or {},
              "finetune_baselines": finetune_baselines, "tasks": list(tasks), "limit": limit, "zs_seed": zs_seed,
              "criterion_samples": criterion_samples, "speed": speed, "eval": evals, "pipelines": pipelines, "lin": lin, "heal": heal}

    provenance()  # fixes the commit this run reports (see provenance.git_commit)
    n_layers = count_layers(model)
    loaded: dict[str, Any] = {}

    def need() -> tuple:
        """The dense model, tokenizer and calibration ids, loaded only when a row must be computed."""
        if not loaded:
            print(f"loading {model} ...")
            loaded["dense"], loaded["tok"] = load_model(model, device=base_cfg.device, dtype=dtype)
            loaded["calib"] = calibration_batches(loaded["tok"], base_cfg.n_samples, base_cfg.seq_len,
                                                  source=base_cfg.calib, seed=base_cfg.seed)
        return loaded["dense"], loaded["tok"], loaded["calib"]

    rows: list[dict] = []

    def run_row(name: str, key_params: dict, compute, calib_free: bool = False) -> dict:
        key = param_key({**{k: v for k, v in shared.items() if not (calib_free and k == "calib")}, **key_params})
        path = out / "rows" / f"{name}-{key}.json"  # other parameters -> another file: both stay cached
        if path.exists() and not force:
            print(f"[{name}] cached: {path.relative_to(out)}")
            return json.loads(path.read_text())
        if cached_only:
            print(f"[{name}] not computed yet (skipped)")
            return None
        print(f"[{name}] computing ...")
        t0 = time.perf_counter()
        row = {"method": key_params["method"], "ratio": key_params.get("ratio", 0.0), "model": model,
               "n_layers": n_layers, **compute()}
        row.update({"key": key, "wall_s": time.perf_counter() - t0, "peak_rss_gb": peak_rss_gb(),
                    "provenance": provenance()})
        write_json_atomic(path, row)
        return row

    dense_row = run_row("dense", {"method": "dense"}, lambda: {
        "n_removed": 0, "removed": [], "prune_s": 0.0, **_evaluate(*need()[:2], base_cfg, evals, zs)}, calib_free=True)
    if dense_row is not None:
        rows.append(dense_row)

    for ratio in ratios:
        cfg = replace(base_cfg, ratio=ratio)
        n = cfg.validate(n_layers)
        budget = step_budget(cfg, n)
        ratio_rows: dict[str, dict] = {}
        order = [(m, False) for m in methods] + [(m, True) for m in methods if m != "trsp" and m in tuned]
        for method, ft in order:
            label = method + ("+ft" if ft else "")
            key_params = {"method": label, "ratio": ratio, "n": n, "config": config_key(cfg),
                          "criterion_samples": criterion_samples if method not in ("trsp", "reverse", "random") else None,
                          "ft_steps": budget if ft else 0}

            def compute(method=method, ft=ft, label=label):
                dense, tok, calib = need()
                pruned = copy.deepcopy(dense)
                base_row = ratio_rows.get(method)
                info = select_and_remove(pruned, method, n, calib, cfg, criterion_samples,
                                         base_row["removed"] if base_row else None)
                twin = _twin(ratio_rows, method, info["removed"], ft)
                if twin is not None:  # same layers, same (or no) training: the same model, so the same scores
                    print(f"[{label}-{ratio}] removes the same layers as {twin['method']}: reusing its scores")
                    scores = {"same_as": twin["method"], **{k: v for k, v in twin.items() if k.startswith(("ppl_", "zs_"))}}
                    ft_s = twin.get("ft_s", 0.0)
                    if ft and save_models:  # the twin's weights were trained: train this copy too before saving
                        finetune(pruned, calib, budget, cfg)
                else:
                    t0 = time.perf_counter()
                    if ft:
                        finetune(pruned, calib, budget, cfg)
                    ft_s = time.perf_counter() - t0
                    scores = _evaluate(pruned, tok, cfg, evals, zs)
                if ft:  # the row's time: selection (already in info for LaCo, which reruns) + fine-tune
                    info["ft_s"] = ft_s
                    info["prune_s"] += ft_s + (base_row["prune_s"] if base_row and method not in EDITS_WEIGHTS else 0.0)
                row = {"n_removed": n, **info, "ft_steps": budget if ft else 0,
                       "ft_tokens": budget * cfg.batch_size * cfg.grad_accum * cfg.seq_len if ft else 0, **scores}
                if save_models:
                    save_model(pruned, tok, out / f"{label}-{ratio}" / "model")
                if speed and "_speed_model" not in ratio_rows:
                    ratio_rows["_speed_model"] = pruned  # every method at this ratio has the same shape
                return row

            row = run_row(f"{label}-{ratio}", key_params, compute)
            if row is None:
                continue
            ratio_rows[label] = row
            rows.append(row)
        for label in pipelines:
            row = _pipeline_row(label, ratio, n, budget, cfg, criterion_samples, lin, heal, ratio_rows, need, run_row,
                                evals, zs, save_models, out)
            if row is not None:
                ratio_rows[label] = row
                rows.append(row)
        if speed and cached_only:
            sp = _speed_row(out, ratio, n, None, ratio_rows, methods, shared, force=False)
        elif speed:
            sp = _speed_row(out, ratio, n, need, ratio_rows, methods, shared, force)
        if speed and sp is not None:
            for label, row in ratio_rows.items():
                if not label.startswith("_"):
                    row.update({f"speedup_{k}": v for k, v in sp["speedup"].items()})
                    row.update({f"ideal_{k}": v for k, v in sp["ideal"].items()})
    if speed and rows and rows[0]["method"] == "dense":
        rows[0].update({"speedup_prefill": 1.0, "speedup_generate": 1.0, "ideal_prefill": 1.0, "ideal_generate": 1.0})
    if write_tables:
        write_results(out, rows, params)
    return rows


def _pipeline_row(label: str, ratio: float, n: int, budget: int, cfg: TRSPConfig, criterion_samples: int, lin: dict,
                  heal_cfg: dict, ratio_rows: dict, need, run_row, evals: dict, zs: dict | None, save_models: bool, out: Path) -> dict | None:
    """One row of selection -> edits -> healing, with the same calibration tokens, budget and evaluation."""
    selection, edits, heal = parse_pipeline(label)
    method = selection.split(":")[0]
    if heal or selection == "trsp:kd":
        cfg = replace(cfg, kd_temperature=heal_cfg["temperature"], lr=heal_cfg["lr"] or cfg.lr,
                      stage2_loss="kd" if selection == "trsp:kd" else cfg.stage2_loss)
    key_params = {"method": label, "ratio": ratio, "n": n, "config": config_key(cfg),
                  "criterion_samples": criterion_samples if method not in ("trsp", "reverse", "random") else None,
                  "ft_steps": budget if heal else 0}
    if edits:
        key_params["edits"] = {"lin": dict(lin)}
    if heal == "kd":
        key_params["heal"] = {"kind": "kd", "temperature": cfg.kd_temperature}

    def compute() -> dict:
        dense, tok, calib = need()
        model = copy.deepcopy(dense)
        base = ratio_rows.get(selection)
        layers = base["removed"] if base and method != "trsp" else None
        t0 = time.perf_counter()
        if edits and method != "trsp":  # the selection's layers, compensated instead of plainly removed
            layers = layers or select_and_remove(copy.deepcopy(dense), method, n, calib, cfg, criterion_samples, None)["removed"]
            info = {"removed": layers, "lin": compensate(model, layers, calib, dense=dense, **lin)}
        else:
            info = select_and_remove(model, method, n, calib, cfg, criterion_samples, layers)
            if edits:  # TRSP's own pruned (stage-2-trained) model, compensated toward the dense states
                info["lin"] = compensate_removed(model, info["removed"], calib, dense, lin["alpha"])
        select_s = (base["prune_s"] if base and method != "trsp" else 0.0) + time.perf_counter() - t0
        t1 = time.perf_counter()
        if heal:
            finetune(model, calib, budget, cfg, teacher=dense if heal == "kd" else None)
        heal_s = time.perf_counter() - t1
        row = {"n_removed": n, **info, "prune_s": select_s + heal_s, "select_s": select_s, "ft_s": heal_s,
               "ft_steps": budget if heal else 0,
               "ft_tokens": budget * cfg.batch_size * cfg.grad_accum * cfg.seq_len if heal else 0,
               **_evaluate(model, tok, cfg, evals, zs, validation=True)}
        if save_models:
            save_model(model, tok, out / f"{label}-{ratio}" / "model")
        return row

    return run_row(f"{label}-{ratio}", key_params, compute)


def default_out(model: str) -> Path:
    """Where the notebooks keep a model's comparison rows: <results dir>/compare-<model>/."""
    return results_dir() / f"compare-{Path(model).name if Path(model).is_dir() else model.replace('/', '--')}"


def _speed_row(out: Path, ratio: float, n: int, need, ratio_rows: dict, methods: list[str], shared: dict,
               force: bool) -> dict:
    """Speed depends only on the shape, which is the same for every method at a ratio: measure once."""
    key = param_key({**shared, "speed": ratio, "n": n})
    path = out / "rows" / f"speed-{ratio}-{key}.json"
    if path.exists() and not force:
        return json.loads(path.read_text())
    if need is None:  # cached_only
        return None
    dense = need()[0]
    pruned = ratio_rows.get("_speed_model")
    if pruned is None:  # every row was reused: rebuild the shape (weights do not matter for time)
        pruned = copy.deepcopy(dense)
        remove_layers(pruned, ratio_rows[methods[0]]["removed"])
    print(f"[speed-{ratio}] dense vs {n} layers removed, interleaved ...")
    sp = compare_speed(dense, pruned)
    sp.update({"key": key, "provenance": provenance()})
    write_json_atomic(path, sp)
    return sp


def write_results(out: Path, rows: list[dict], params: dict) -> None:
    """results.json (rows + parameters + provenance) and results.csv (flat columns), atomically."""
    import pandas as pd

    write_json_atomic(out / "results.json", {"params": params, "provenance": provenance(), "rows": rows})
    flat = [{k: v for k, v in r.items() if not isinstance(v, (dict, list)) or k == "removed"} for r in rows]
    df = pd.DataFrame(flat)
    tmp = out / ".results.csv.tmp"
    df.to_csv(tmp, index=False)
    tmp.replace(out / "results.csv")


def zs_stderr(row: dict) -> float:
    """Standard error of a row's zero-shot average from its item counts (binomial, tasks independent).

    With 50 items per task and 5 tasks it is about 0.03: two averages closer than ~2 standard errors
    of their difference (about 0.06 there) are a tie, whatever the table's third decimal says."""
    metric, counts = row.get("zs_average_metric"), row.get("zs_n")
    if not metric or not counts:
        return float("nan")
    var = sum(p * (1 - p) / counts[t] for t, m in metric.items() for p in [row[f"zs_{t}_{m}"]])
    return var ** 0.5 / len(metric)


def table(rows: list[dict]):
    """The headline columns as a DataFrame (what `trsp compare` prints and the book renders)."""
    import pandas as pd

    df = pd.DataFrame(rows)
    if "zs_avg" in df.columns:
        df["zs_se"] = [zs_stderr(r) for r in rows]
    cols = ["method", "ratio", "n_removed", "ppl_wiki", "ppl_news", "zs_avg", "zs_se"]
    cols += [c for c in df.columns if c.startswith("zs_") and c not in ("zs_avg", "zs_se", "zs_average_metric", "zs_n")]
    cols += [c for c in ("speedup_prefill", "ideal_prefill", "speedup_generate", "ideal_generate", "prune_s") if c in df.columns]
    return df[[c for c in cols if c in df.columns]]

"""Every method under one protocol: same model, calibration tokens, removal code and evaluation.

`compare` runs the dense model, TRSP and each baseline criterion (optionally followed by plain
fine-tuning with TRSP's exact step and token budget, the "+ft" rows), scores each on in- and
out-of-domain perplexity and zero-shot accuracy, and writes one row per (method, ratio). Each row
is its own JSON file under OUT/rows/, keyed by a hash of everything that determines it and the
library version (in the file name): a rerun reuses finished rows and computes only new ones. A row
stores what its key hashes ("params", schema `provenance.KEY_SCHEMA`): every parameter in full.
"""
from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path
from typing import Any

from torch import nn

from . import __version__
from .surgery.devices import resolve_dtype
from .data import calibration_batches
from .evaluation import perplexities
from .log import say
from .models import count_layers, load_model, windows
from .pipelines import HEAL_DEFAULT, LIN_DEFAULT, SELECTIONS, STUDY, Job, Pipeline, finish, parse, select
from .profiles import EvalSettings, load
from .provenance import KEY_SCHEMA, atomic_path, param_key, provenance, write_json_atomic
from .surgery.removal import remove_layers, save_model
from .results import results_dir, stored
from .speed import compare_speed
from .method.trsp import Budget, TRSPConfig, budget
from .zeroshot import DEFAULT_TASKS, TASKS_VERSION, zero_shot, zs_stderr

ALL_METHODS = STUDY  # what "all" means; any selection of `pipelines.SELECTIONS` is accepted by name
DEFAULT_TEXTS = {"wiki": "wiki", "news": "news"}  # column label -> evaluation text (the built-in test splits)
#: column label -> validation text, scored on the pipeline rows: every tuning choice is read off these
DEFAULT_VAL_TEXTS = {"wiki_val": "wiki_val", "news_val": "news_val"}


def resolve_methods(methods: str | list[str] | tuple[str, ...]) -> list[str]:
    names = methods.split(",") if isinstance(methods, str) else list(methods)
    if names in (["all"], ("all",)):
        return list(ALL_METHODS)
    known = [m for m in SELECTIONS if m != "given"]  # a variant (trsp:kd) is a pipeline row (pipelines=)
    unknown = [m for m in names if m not in known]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from all, {', '.join(known)}")
    return names


def labels(methods: list[str], tuned: list[str]) -> list[str]:
    """The rows at one ratio, in table order: every method, then `method+ft` for the tuned baselines
    (a selection that already spends the training budget, TRSP, gets no +ft control)."""
    return methods + [f"{m}+ft" for m in methods if m in tuned and not SELECTIONS[m].trains]


def check_options(lin: dict, heal: dict) -> dict[str, dict]:
    """The pipeline options with their defaults, {"lin": ..., "heal": ...}; one-line errors for options that would
    silently compute nonsense (a negative ridge flips its sign)."""
    unknown = sorted(set(lin) - set(LIN_DEFAULT)) + sorted(set(heal) - set(HEAL_DEFAULT))
    if unknown:
        raise ValueError(f"unknown pipeline option(s) {unknown}; lin takes {sorted(LIN_DEFAULT)}, "
                         f"heal {sorted(HEAL_DEFAULT)}")
    if lin.get("alpha", 0.0) < 0:
        raise ValueError(f"lin alpha must be >= 0 (a ridge, relative to mean diag(M^T M)), got {lin['alpha']}; "
                         "try 0 or 1e-3")
    if heal.get("temperature", 1.0) <= 0:
        raise ValueError(f"heal temperature must be > 0, got {heal['temperature']}; the usual is 1")
    if not isinstance(heal.get("last", 0), int) or heal.get("last", 0) < 0:
        raise ValueError(f"heal last must be a whole number >= 0 (0: every weight heals), got {heal['last']!r}")
    if heal.get("lr") is not None and heal["lr"] <= 0:
        raise ValueError(f"heal lr must be > 0 (or None: the profile's), got {heal['lr']}")
    return {"lin": {**LIN_DEFAULT, **lin}, "heal": {**HEAL_DEFAULT, **heal}}


def check_texts(texts: dict | None, val_texts: dict | None) -> tuple[dict[str, str], dict[str, str]]:
    """The evaluation and validation texts (None: the defaults); one-line errors for a map that would key a non-text
    and for a validation column that would overwrite a test column."""
    given = {"eval_texts": DEFAULT_TEXTS if texts is None else texts,
             "val_texts": DEFAULT_VAL_TEXTS if val_texts is None else val_texts}
    for name, m in given.items():
        if not isinstance(m, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in m.items()):
            raise TypeError(f"{name} must map column labels to texts, e.g. {{'wiki': 'wiki'}}, got {m!r}")
    if clash := sorted(set(given["eval_texts"]) & set(given["val_texts"])):
        raise ValueError(f"val_texts label(s) {clash} also label eval_texts; give validation columns their own "
                         "labels, e.g. {'wiki_val': 'wiki_val'}")
    return dict(given["eval_texts"]), dict(given["val_texts"])


def evaluate(model, tok, evals: EvalSettings, zs: dict | None, texts: dict[str, str] = DEFAULT_TEXTS,
             val_texts: dict[str, str] | None = None) -> dict[str, Any]:
    """Perplexity on each text and validation text (windowed alike), column ppl_<label>, and zero-shot accuracy."""
    scored = perplexities(model, tok, {**texts, **(val_texts or {})}, evals)
    row: dict[str, Any] = {f"ppl_{label}": ppl for label, ppl in scored.items()}
    if zs is not None:
        r = zero_shot(model, tok, **zs)
        row["zs_avg"] = r["average"]
        for task, metrics in r["tasks"].items():
            row.update({f"zs_{task}_{m}": metrics[m] for m in ("acc", "acc_norm") if m in metrics})
        row["zs_average_metric"] = r["average_metric"]
        row["zs_n"] = {t: m["n"] for t, m in r["tasks"].items()}
        row.update({"zs_items": r["items"], "zs_items_per_s": r["items_per_s"], "zs_batch_size": zs["batch_size"]})
    return row


class _Run:
    """One `compare` call: the shared key, the lazily loaded dense model, and one method's row."""

    def __init__(self, model: str, out: Path, cfg: TRSPConfig, evals: EvalSettings, zs: dict | None, **opts: Any):
        self.name, self.out, self.cfg, self.evals, self.zs = model, out, cfg, evals, zs
        self.texts, self.val_texts = check_texts(opts["texts"], opts["val_texts"])
        self.criterion_samples, self.force, self.cached_only = (opts["criterion_samples"], opts["force"],
                                                                opts["cached_only"])
        self.save_models, self.dtype, self.options = opts["save_models"], opts["dtype"], opts["options"]
        zs_key = zs and {**{k: v for k, v in zs.items() if k != "batch_size"}, "tasks_version": TASKS_VERSION}
        weights = str(resolve_dtype(self.dtype, cfg.device)).removeprefix("torch.")
        self.shared = {"schema": KEY_SCHEMA, "model": model, "version": __version__, "eval": evals.key(),
                       "zero_shot": zs_key, "dtype": weights, "texts": self.texts,
                       "calib": [cfg.calib, cfg.n_samples, cfg.seq_len, cfg.seed],  # windows: with BOS or not
                       "windows": windows(model)}
        self.n_layers = count_layers(model)
        self.shapes: dict[float, nn.Module] = {}  # one pruned model per ratio, for the speed row
        self._loaded: tuple = ()

    def need(self) -> tuple:
        """The dense model, tokenizer and calibration ids, loaded only when a row must be computed."""
        if not self._loaded:
            say(f"loading {self.name} ...")
            dense, tok = load_model(self.name, device=self.cfg.device, dtype=self.dtype)
            c = self.cfg
            self._loaded = dense, tok, calibration_batches(tok, c.n_samples, c.seq_len, source=c.calib, seed=c.seed)
        return self._loaded

    def row(self, name: str, key_params: dict, compute, calib_free: bool = False) -> dict | None:
        """A row cached under a hash of its "params" (the shared entries, then its own), which it stores readable.
        `calib_free`: the dense row, which sees no calibration data, keys without the "calib" entry."""
        params = {**{k: v for k, v in self.shared.items() if not (calib_free and k == "calib")}, **key_params}
        key = param_key(params)
        head = {"method": key_params["method"], "ratio": key_params.get("ratio", 0.0), "model": self.name,
                "n_layers": self.n_layers}  # other parameters -> another file: both stay cached
        return stored(self.out / "rows" / f"{name}-{key}.json", key, lambda: {**head, "params": params, **compute()},
                      force=self.force, cached_only=self.cached_only, name=name)

    def dense(self) -> dict | None:
        return self.row("dense", {"method": "dense"}, lambda: {
            "n_removed": 0, "removed": [], "prune_s": 0.0,
            **evaluate(*self.need()[:2], self.evals, self.zs, self.texts)}, calib_free=True)

    def method(self, p: Pipeline, cfg: TRSPConfig, n: int, earlier: dict[str, dict],
               extra: bool = False) -> dict | None:
        """The row of pipeline `p` at `cfg.ratio`; `earlier` holds this ratio's rows so far (layers, twins). `extra`:
        a row of `compare(pipelines=...)`: its steps' options apply, its key records the validation texts it scores."""
        spend = budget(cfg, n)
        cfg = p.configure(cfg, self.options) if extra else cfg
        key_params = {**p.key_params(cfg.ratio, n, cfg, self.criterion_samples, spend.steps, self.options),
                      **({"val_texts": self.val_texts} if extra else {})}
        return self.row(f"{p.label}-{cfg.ratio}", key_params, lambda: self._compute(p, cfg, n, spend, earlier, extra))

    def _compute(self, p: Pipeline, cfg: TRSPConfig, n: int, spend: Budget, earlier: dict[str, dict],
                 extra: bool) -> dict:
        dense, tok, calib = self.need()
        job = Job(copy.deepcopy(dense), n, cfg, calib, self.criterion_samples, spend.steps,
                  dense=dense if "dense" in p.needs() else None, options=self.options, store=self.out)
        base = earlier.get(p.base)  # the selection's own row: its layers, unless they do not rebuild it
        info = select(p, job, base["removed"] if base else None,
                      once={k: self.shared[k] for k in ("model", "dtype", "calib")})
        twin = None if extra else next((r for label, r in earlier.items() if p.same_model_as(parse(label))
                                        and sorted(r["removed"]) == sorted(info["removed"])), None)
        if twin is not None:  # same layers, same (or no) further steps: the same model, so the same scores
            say(f"[{p.label}-{cfg.ratio}] removes the same layers as {twin['method']}: reusing its scores")
            scores = {"same_as": twin["method"], **{k: v for k, v in twin.items() if k.startswith(("ppl_", "zs_"))}}
            post_s = twin.get("ft_s", 0.0)
            if self.save_models:  # the twin's weights were edited or trained: this copy too, before saving
                finish(p, job)
        else:
            post_s, post = finish(p, job)
            info.update(post)
            scores = evaluate(job.model, tok, self.evals, self.zs, self.texts, self.val_texts if extra else None)
        reused = base is not None and not p.select.changes_weights
        if extra:  # selection (with its own row's time when reused), then edits and healing
            select_s = info["prune_s"] + (base["prune_s"] if reused else 0.0)
            info.update({"prune_s": select_s + post_s, "select_s": select_s, "ft_s": post_s})
        elif len(p.steps) > 1:  # the row's time: selection (rerun, or its own row's) + edits and healing
            info["ft_s"] = post_s
            info["prune_s"] += post_s + (base["prune_s"] if reused else 0.0)
        row = {"n_removed": n, **info, "ft_steps": spend.steps if p.heal else 0,
               "ft_tokens": spend.tokens if p.heal else 0, **scores}
        if self.save_models:
            save_model(job.model, tok, self.out / f"{p.label}-{cfg.ratio}" / "model")
        self.shapes.setdefault(cfg.ratio, job.model)  # every method at this ratio has the same shape
        return row

    def speed(self, ratio: float, n: int, earlier: dict[str, dict]) -> dict | None:
        """Speed depends only on the shape (the same for every method at a ratio) and the device: measured once."""
        params = {**self.shared, "speed": ratio, "n": n, "device": self.cfg.device}
        key = param_key(params)

        def measure() -> dict:
            dense = self.need()[0]
            pruned = self.shapes.get(ratio)
            if pruned is None:  # every row was reused: rebuild the shape (weights do not matter for time)
                pruned = remove_layers(copy.deepcopy(dense), next(iter(earlier.values()))["removed"])
            say(f"[speed-{ratio}] dense vs {n} layers removed, interleaved ...")
            return {"params": params, **compare_speed(dense, pruned)}

        return stored(self.out / "rows" / f"speed-{ratio}-{key}.json", key, measure, force=self.force,
                      cached_only=self.cached_only or not earlier)


def compare(model: str = "smollm2-135m", ratios: tuple[float, ...] | list[float] = (0.25,),
            methods: str | list[str] = "all", out: str | Path | None = None, profile: str = "default",
            finetune_baselines: bool | str | list[str] = True, tasks: tuple[str, ...] | list[str] = DEFAULT_TASKS,
            limit: int | None = 50, zs_seed: int = 0, zs_batch_size: int = 8, criterion_samples: int = 16,
            speed: bool = True, save_models: bool = False, force: bool = False, dtype: str | None = None,
            overrides: dict | None = None, cached_only: bool = False, pipelines: str | list[str] | None = None,
            lin: dict | None = None, heal: dict | None = None, eval_texts: dict[str, str] | None = None,
            val_texts: dict[str, str] | None = None) -> list[dict]:
    """Run and score every (method, ratio); returns the rows (also written to OUT/results.{json,csv} when `out` is
    given; without it, rows are cached under the results directory, see `default_out`).

    `profile` and `overrides` set the TRSP configuration, hence the calibration data, fine-tune budget and evaluation
    windows shared by every method. `limit` items per zero-shot task (seeded, the same items for every row; None = full
    sets, hours on a CPU). `finetune_baselines`: True (every baseline gets a +ft row), False, or the methods that do.
    `criterion_samples` calibration rows feed the baseline criteria. `cached_only`: compute nothing. `pipelines`:
    further rows, selection[+lin][+ft|+kd] (`pipelines.parse`), on the same calibration tokens, with the options `lin`
    and `heal` (`LIN_DEFAULT`, `HEAL_DEFAULT`) and `val_texts` (label -> validation text; `DEFAULT_VAL_TEXTS`) in
    their keys. `eval_texts`: label -> test text (default: the built-in wiki, news), in every key."""
    if overrides is not None and not isinstance(overrides, dict):
        raise TypeError(f"overrides must be a dict of TRSPConfig fields, got {type(overrides).__name__} {overrides!r}; "
                        "from papermill pass it inside -y, e.g. -y '{\"overrides\": {\"lambda1\": 0.02}}' "
                        "(-p passes a string)")
    methods = resolve_methods(methods)
    extra = [parse(p) for p in (pipelines.split(",") if isinstance(pipelines, str) else pipelines or []) if p]
    options = check_options(lin or {}, heal or {})
    tuned = (methods if finetune_baselines is True else [] if finetune_baselines is False
             else resolve_methods(finetune_baselines))  # which baselines also get a +ft row
    base_cfg, evals = load(profile, **(overrides or {}))
    if any(not 0.0 < r < 1.0 for r in ratios):
        raise ValueError(f"ratios must be in (0, 1), got {list(ratios)}")
    zs = None if limit == 0 else {"tasks": tuple(tasks), "limit": limit, "seed": zs_seed, "batch_size": zs_batch_size}
    provenance()  # fixes the commit this run reports (see provenance.git_commit)
    run = _Run(model, Path(out) if out is not None else default_out(model), base_cfg, evals, zs,
               criterion_samples=criterion_samples, force=force, cached_only=cached_only, save_models=save_models,
               dtype=dtype, options=options, texts=eval_texts, val_texts=val_texts)
    rows = [r for r in [run.dense()] if r is not None]
    for ratio in ratios:
        cfg = replace(base_cfg, ratio=ratio)
        n = cfg.validate(run.n_layers)
        done: dict[str, dict] = {}
        for p, is_extra in [(parse(label), False) for label in labels(methods, tuned)] + [(p, True) for p in extra]:
            row = run.method(p, cfg, n, done, is_extra)
            if row is not None:
                done[p.label] = row
                rows.append(row)
        sp = run.speed(ratio, n, done) if speed else None
        for row in done.values() if sp else ():
            row.update({f"speedup_{k}": v for k, v in sp["speedup"].items()})
            row.update({f"ideal_{k}": v for k, v in sp["ideal"].items()})
    if speed and rows and rows[0]["method"] == "dense":
        rows[0].update({"speedup_prefill": 1.0, "speedup_generate": 1.0, "ideal_prefill": 1.0, "ideal_generate": 1.0})
    if out is not None:  # notebooks (out=None) share cached rows and print their own tables
        write_results(run.out, rows, {"model": model, "ratios": list(ratios), "methods": methods, "profile": profile,
                                      "overrides": overrides or {}, "finetune_baselines": finetune_baselines,
                                      "tasks": list(tasks), "limit": limit, "zs_seed": zs_seed,
                                      "criterion_samples": criterion_samples, "speed": speed, "eval": evals.key(),
                                      "pipelines": [p.label for p in extra], **options,
                                      "eval_texts": run.texts, "val_texts": run.val_texts})
    return rows


def default_out(model: str) -> Path:
    """Where the notebooks keep a model's comparison rows: <results dir>/compare-<model>/."""
    return results_dir() / f"compare-{Path(model).name if Path(model).is_dir() else model.replace('/', '--')}"


def write_results(out: Path, rows: list[dict], params: dict) -> None:
    """results.json (rows + parameters + provenance) and results.csv (flat columns), atomically."""
    import pandas as pd

    write_json_atomic(out / "results.json", {"params": params, "provenance": provenance(), "rows": rows})
    flat = [{k: v for k, v in r.items() if not isinstance(v, (dict, list)) or k == "removed"} for r in rows]
    with atomic_path(out / "results.csv") as tmp:
        pd.DataFrame(flat).to_csv(tmp, index=False)


def table(rows: list[dict]):
    """The headline columns as a DataFrame (what `trsp compare` prints and the book renders)."""
    import pandas as pd

    df = pd.DataFrame(rows)
    if "zs_avg" in df.columns:
        df["zs_se"] = [zs_stderr(r) for r in rows]
    ppl = [c for c in df.columns if c.startswith("ppl_") and not c.endswith("_val")]  # ppl_<label> of each text
    cols = ["method", "ratio", "n_removed", *ppl, "zs_avg", "zs_se"]
    cols += [c for c in df.columns if c.startswith("zs_") and c not in ("zs_avg", "zs_se", "zs_average_metric", "zs_n",
                                                                        "zs_items", "zs_items_per_s", "zs_batch_size")]
    cols += [c for c in ("speedup_prefill", "ideal_prefill", "speedup_generate", "ideal_generate", "prune_s")
             if c in df.columns]
    return df[[c for c in cols if c in df.columns]]

"""The plan made real: each `plan.Row` becomes the one call that computes it (or finds it cached), the declared
searches make the choices on validation, and `status` / `run` walk the plan (`python -m study`).

A row is read through the result cache's listeners, so that a missing row still reports the key it will have.
"""
from __future__ import annotations

import contextlib
import math
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trsp_lib import results
from trsp_lib.data import data_dir
from trsp_lib.compare import compare
from trsp_lib.pipelines import parse

from . import plan
from .plan import Params, Row
from .searches import pick_on_validation, record, search_trsp

#: The committed study's results folder.
COMMITTED = data_dir() / "results"


@contextlib.contextmanager
def capture() -> Iterator[list[tuple[Path, str, dict | None]]]:
    """Every (path, key, record or None) the result cache is asked for inside the block."""
    seen: list[tuple[Path, str, dict | None]] = []
    found = lambda path, record: seen.append((Path(path), record.get("key", ""), record))  # noqa: E731
    missing = lambda path, key: seen.append((Path(path), key, None))  # noqa: E731
    results.LISTENERS.append(found)
    results.MISSING.append(missing)
    try:
        yield seen
    finally:
        results.LISTENERS.remove(found)
        results.MISSING.remove(missing)


def call(r: Row, P: Params) -> dict[str, Any]:
    """The `compare` keywords of a row: its selection alone (and its + fine-tune row, or its pipeline)."""
    kw = {"model": r.model, "ratios": [r.ratio], "profile": P.profile, "limit": r.limit, "speed": r.kind == "speed-row",
          "criterion_samples": r.criterion_samples or 16, "eval_texts": P.eval_texts, "val_texts": P.val_texts,
          "overrides": {"seed": r.seed, "device": P.device, "calib": P.calib, **P.overrides, **r.overrides}}
    if r.pipeline in ("dense", "speed"):
        return {**kw, "methods": ["trsp"] if r.kind == "speed-row" else [], "finetune_baselines": False}
    p = parse(r.pipeline)
    if r.extra:  # after its selection's own row (whose layers it reuses), unless the pipeline is that selection
        return {**kw, "methods": [] if p.base == r.pipeline else [p.selection], "finetune_baselines": False,
                "pipelines": [r.pipeline], "lin": r.lin, "heal": r.heal}
    return {**kw, "methods": [p.selection], "finetune_baselines": [p.selection] if p.heal else False}


def _prefix(r: Row) -> str:
    """The start of the row's file name in the cache."""
    return {"dense": "dense-", "speed-row": f"speed-{r.ratio}-"}.get(r.kind if r.kind != "compare" else r.pipeline,
                                                                      f"{r.pipeline}-{r.ratio}-")


def layer_scores(P: Params, cached_only: bool = False) -> dict | None:
    """Every criterion's per-layer scores on the calibration rows the criteria see (the importance chapter)."""
    from trsp_lib.baselines.criteria import layer_scores as scores
    from trsp_lib.data import calibration_batches, window_key
    from trsp_lib.models import load_model, load_tokenizer
    from trsp_lib.profiles import load

    cfg, _ = load(P.profile, calib=P.calib)

    def compute() -> dict:
        net, tok = load_model(P.model, device=P.device)
        return scores(net, calibration_batches(tok, cfg.n_samples, cfg.seq_len, source=cfg.calib,
                                               seed=P.seed)[:P.criterion_samples])

    return results.cached("layer_scores", {"model": P.model, "calib": [cfg.calib, cfg.n_samples, cfg.seq_len, P.seed],
                                           "criterion_samples": P.criterion_samples,
                                           **window_key(load_tokenizer(P.model))}, compute, cached_only=cached_only)


def _fetch(r: Row, P: Params, compute: bool) -> None:
    if r.kind == "speed":
        from .speed import speed_by_ratio
        speed_by_ratio(r.model, [r.ratio], device=P.device, seed=P.seed, cached_only=not compute, **P.speed)
    elif r.kind == "scores":
        layer_scores(P, cached_only=not compute)
    else:
        compare(**call(r, P), cached_only=not compute)


def probe(r: Row, P: Params, compute: bool = False) -> tuple[str | None, dict | None]:
    """(key, record) of a row; record None when it is not cached (and `compute` is off); key None while the row
    waits on a choice."""
    if r.waits():
        if compute:
            raise ValueError(f"row {r.label!r} waits on the choice(s) {r.waits()}: make them first (runner.choices)")
        return None, None
    with capture() as seen:
        _fetch(r, P, compute)
    kind = {"speed": "speed", "scores": "layer_scores"}.get(r.kind)
    mine = [s for s in seen if (s[0].parent.name == kind if kind else s[0].name.startswith(_prefix(r)))]
    if not mine:
        raise RuntimeError(f"row {r.label!r} ({r.pipeline}) touched no cached result: the plan and compare disagree")
    path, key, record = mine[-1]
    return key, None if record is None else {"model": r.model, **record, "label": r.label, "seed": r.seed}


def read(r: Row, P: Params, compute: bool = True) -> dict | None:
    """The row's record (computed when missing and `compute`), with its study label and seed ("label", "seed")."""
    return probe(r, P, compute)[1]


def read_all(rows: list[Row], P: Params, compute: bool = True) -> list[dict]:
    """The records of `rows` that exist (every one, when `compute`), in order."""
    return [x for x in (read(r, P, compute) for r in rows) if x is not None]


def metric(P: Params) -> str:
    """The one validation column every search reads: the first validation text's perplexity."""
    return f"ppl_{next(iter(P.val_texts))}"


def _pick(rows: list[Row], P: Params, compute: bool, what: str) -> tuple[dict | None, list[dict]]:
    """The chosen setting among `rows` (its `what` field: heal or lin) and the search's table (`searches.record`);
    None while a candidate is missing (a choice is made on every candidate or not at all)."""
    if any(r.waits() for r in rows) or not rows:
        return None, []
    recs = [read(r, P, compute) for r in rows]
    if any(x is None for x in recs):
        return None, []
    candidates = [(getattr(r, what), x) for r, x in zip(rows, recs)]
    best, _ = pick_on_validation(candidates, metric(P))
    return best, record(candidates, best, metric(P))


def choices(P: Params, compute: bool = False) -> dict[str, Any]:
    """Every choice the plan's rows name, made by its declared search on validation text (None: not made yet,
    a candidate is missing), and "records": the rows each search read, by choice."""
    ch: dict[str, Any] = {"records": {}, "trsp_round2": []}
    complete = [True]
    first = {plan.name(p) for p in plan.ROUND1}

    def evaluate(points: list[dict]) -> list[dict | None]:
        if not complete[0]:  # after a missing run the greedy path is unknown: propose nothing further
            return [None] * len(points)
        recs = [read(r, P, compute) for r in plan.trsp_search(P, points)[1:]]
        ch["trsp_round2"] += [p for p in points if plan.name(p) not in first]
        complete[0] = all(x is not None for x in recs)
        return recs

    trsp = search_trsp(evaluate, metric(P))
    ch["tuned"] = trsp["best"] if complete[0] else None
    ch["records"]["tuned"] = trsp
    for sel in ("shortgpt", "sleb"):
        best, recs = _pick(plan.heal_search(P, sel)[1:], P, compute, "heal")
        ch[f"heal_lr:{sel}"] = best and {"lr": best["lr"]}
        ch["records"][f"heal_lr:{sel}"] = recs
    for what, field in (("lin", "lin"), ("ft", "heal"), ("kd", "heal"), ("scope", "heal")):
        rows = [r.resolve(ch) for r in plan.frontier_search(P, what, ch)]
        ch[what], ch["records"][what] = _pick(rows, P, compute, field)
    ch["kd@profile"] = ch["kd"] and {**ch["kd"], "lr": None}
    return ch


def resolved(P: Params, chapter: str | None = None, compute: bool = False) -> tuple[list[Row], dict]:
    """The plan's rows (of one chapter) with every choice made so far, and the choices."""
    ch = choices(P, compute)
    return plan.rows(P, ch, chapter), ch


def section(P: Params, name: str, ch: dict | None = None, compute: bool = True) -> list[dict]:
    """The records of one section, in plan order (computing the missing ones, the choices first, when `compute`)."""
    ch = ch if ch is not None else choices(P, compute)
    return read_all([r.resolve(ch) for r in plan.SECTIONS[name](P, ch)], P, compute)


def table(records: list[dict]):
    """`compare.table` of a section's comparison records, one line per study label (the "method" column)."""
    from trsp_lib.compare import table as compare_table

    rows = [x for x in records if "method" in x]
    return compare_table(rows).assign(method=[x["label"] for x in rows])


def by_label(records: list[dict]) -> dict[str, list[dict]]:
    """Study label -> its records (one per seed), in order."""
    out: dict[str, list[dict]] = {}
    for x in records:
        out.setdefault(x["label"], []).append(x)
    return out


def cost_s(record: dict) -> tuple[float, bool]:
    """(seconds on this 2-core CPU, measured?) of a record; a GPU row's is NaN. Where the record has its CPU
    time, half of it (results computed inside it apart): one thread uses half the machine, and two threads
    alone keep both cores busy; CPU time, unlike wall time, does not grow when other jobs share the cores.
    Older records have only their wall time."""
    if (record.get("provenance") or {}).get("cuda"):
        return math.nan, False
    if record.get("cpu_s"):
        return (record["cpu_s"] - (record.get("nested_cpu_s") or 0.0)) / 2, True
    return record.get("wall_s", math.nan), True


def estimates(known: list[tuple[Row, dict]], q: float = 0.5) -> dict[tuple, float]:
    """Measured seconds per (model, pipeline, kind, zero-shot items), their median (or quantile `q`): what a
    missing row is estimated at. A group measured only on a GPU: its GPU wall time times the CPU / GPU ratio
    measured on the rows computed on both (`gpu_check.json`, the middle of its range)."""
    groups: dict[tuple, list[float]] = {}
    on_gpu: dict[tuple, list[float]] = {}
    for r, x in known:
        s, measured = cost_s(x)
        if measured and s == s:
            groups.setdefault(_group(r), []).append(s)
        elif not measured and x.get("wall_s"):
            on_gpu.setdefault(_group(r), []).append(x["wall_s"])
    out = {k: _quantile(v, q) for k, v in groups.items()}
    if set(on_gpu) - set(out):
        from .chapter import gpu_to_cpu

        with results_in(COMMITTED):
            ratio = statistics.mean(gpu_to_cpu())
        out.update({k: ratio * _quantile(v, q) for k, v in on_gpu.items() if k not in out})
    return out


def _quantile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.quantile(values, q))


def estimate(est: dict[tuple, float], r: Row) -> float:
    """A missing row's estimated seconds from `known_costs` (a kind of row never measured: 5 minutes)."""
    return est.get(_group(r), 300.0)


def known_costs(P: Params, chapter: str | None = None, q: float = 0.5,
                own: dict[str, tuple[Row, dict]] | None = None) -> dict[tuple, float]:
    """`estimates` for the plan's missing rows. In a regeneration (the results folder is not the committed one) a
    group the regeneration has measured is estimated from its own rows; any other group from the committed
    study's costs, times the median ratio of the regeneration's rows to the same results' committed records (the
    committed wall times were often taken while other jobs shared the cores). `own`: the results folder's rows
    by key, when the caller has already read them."""
    found = []
    for folder in dict.fromkeys([results.results_dir(), COMMITTED]):
        if own is not None and folder == results.results_dir():
            found.append(own)
            continue
        with results_in(folder):
            rows, _ = resolved(P, chapter)
            found.append({k: (r, x) for r in rows if not r.waits() for k, x in [probe(r, P)] if x is not None})
    return calibrated(*found, q=q)


def calibrated(own: dict[str, tuple[Row, dict]], committed: dict[str, tuple[Row, dict]] | None = None,
               q: float = 0.5) -> dict[tuple, float]:
    """`known_costs` from the rows found by key: `own` (the results folder's), `committed` (None: the same)."""
    mine = estimates(list(own.values()), q)
    if committed is None:
        return mine
    ratios = [a / b for k, (_, x) in own.items() if k in committed
              for (a, ok_a), (b, ok_b) in [(cost_s(x), cost_s(committed[k][1]))] if ok_a and ok_b and a == a and b > 0]
    scale = statistics.median(ratios) if ratios else 1.0
    return {**{g: scale * s for g, s in estimates(list(committed.values()), q).items()}, **mine}


@contextlib.contextmanager
def results_in(folder: Path) -> Iterator[None]:
    """The results folder set to `folder` inside the block."""
    import os

    before = os.environ.get("TRSP_RESULTS")
    os.environ["TRSP_RESULTS"] = str(folder)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TRSP_RESULTS", None)
        else:
            os.environ["TRSP_RESULTS"] = before


def _group(r: Row) -> tuple:
    return r.model, r.pipeline, r.kind, r.limit  # 500 zero-shot items cost several times 50: not one group

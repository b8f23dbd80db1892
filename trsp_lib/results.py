"""The one result cache: every cached computation of the study goes through `stored`.

A result is a JSON file whose key hashes everything that determines it (parameters and the library
version): a compare row (`compare-<model>/rows/<label>-<ratio>-<key>.json`), a speed row, a
notebook's result (`<kind>/<key>.json`, via `cached`), a dense perplexity, a `trsp prune` run.
A file is reused only when it holds the same key; it carries its provenance (commit, versions,
machine, wall time, peak memory) and is written atomically, so an interrupted run loses only the
result in progress. Bumping `trsp_lib.__version__` invalidates everything. Every key is made by
`provenance.param_key`, so it records `KEY_SCHEMA`; a record holds what its key hashes ("params"),
which is how tools/migrate_keys.py rewrites stored records when the schema changes.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import __version__
from .data import data_dir
from .log import say
from .provenance import KEY_SCHEMA, env_flag, param_key, peak_rss_gb, provenance, write_json_atomic

__all__ = ["results_dir", "fresh", "stored", "cached", "param_key", "cached_params", "KEY_SCHEMA", "LISTENERS",
           "MISSING"]

#: Called with (path, record) for every record `stored` returns, cached or just computed: how a reader of
#: the results (e.g. a report summing the wall times of what it used) follows them without this module knowing it.
LISTENERS: list[Callable[[Path, dict], None]] = []
#: Called with (path, key) for every record `stored` was asked for but did not find and did not compute
#: (`cached_only`): how a planner learns the key a missing result will have without computing it.
MISSING: list[Callable[[Path, str], None]] = []


def results_dir() -> Path:
    """`TRSP_RESULTS` if set (the tiny book build uses a scratch directory), else data/results/."""
    env = os.environ.get("TRSP_RESULTS")
    return Path(env) if env else data_dir() / "results"


def fresh() -> bool:
    """`TRSP_FRESH=1` (what `make book FRESH=1` sets) recomputes instead of reusing."""
    return env_flag("TRSP_FRESH")


def stored(path: Path, key: str, compute: Callable[[], dict], *, force: bool = False,
           cached_only: bool = False, name: str | None = None) -> dict | None:
    """The record at `path` if it holds `key` (made by `param_key`); else `compute()` plus key and provenance,
    written atomically.

    `force` (or `TRSP_FRESH=1`) recomputes; `cached_only` computes nothing and returns None instead.
    With a `name`, says which of the three happened ("[name] cached: ...", "computing", "not computed")."""
    path = Path(path)
    from .surgery.distributed import agree
    if agree(path.exists() and not (force or fresh())):  # under FSDP rank 0 decides: every process computes the same
        record = json.loads(path.read_text())
        if record.get("key") == key:
            _say(name, f"cached: {path.parent.name}/{path.name}")
            return _returned(path, record)
    if cached_only or env_flag("TRSP_CACHED_ONLY"):  # the env flag: render from what exists, compute nothing
        _say(name, "not computed yet (skipped)")
        for listener in MISSING:
            listener(path, key)
        return None
    _say(name, "computing ...")
    t0, c0 = time.perf_counter(), time.process_time()
    record = compute()
    # cpu_s (this process's CPU seconds, all threads) does not grow when other jobs share the cores; wall_s does
    record.update({"key": key, "wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
                   "peak_rss_gb": peak_rss_gb(),
                   "provenance": provenance()})
    write_json_atomic(path, record)
    return _returned(path, json.loads(path.read_text()))  # what a rerun will see (JSON types)


def _returned(path: Path, record: dict) -> dict:
    for listener in LISTENERS:
        listener(path, record)
    return record


def _say(name: str | None, what: str) -> None:
    if name is not None:
        say(f"[{name}] {what}")


def cached_params(kind: str, params: dict, version: str = __version__) -> dict:
    """What a `cached` result's key hashes (the record stores it beside the result): `params` are the caller's,
    recorded as given."""
    return {"schema": KEY_SCHEMA, "kind": kind, "params": params, "version": version}


def cached(kind: str, params: dict, compute: Callable[[], Any], root: Path | None = None,
           cached_only: bool = False) -> Any:
    """`compute()` once per (kind, params, library version) under `root` (default: the results directory).
    `cached_only`: compute nothing; None when it is not there."""
    hashed = cached_params(kind, params)
    key = param_key(hashed)
    path = Path(root or results_dir()) / kind / f"{key}.json"
    record = stored(path, key, lambda: {**hashed, "result": compute()}, cached_only=cached_only)
    return None if record is None else record["result"]

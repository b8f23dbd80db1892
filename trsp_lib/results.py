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

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from . import __version__
from .data import data_dir
from .log import say
from .provenance import KEY_SCHEMA, env_flag, param_key, peak_rss_gb, provenance, write_json_atomic

__all__ = ["results_dir", "fresh", "stored", "claim", "cached", "param_key", "cached_params", "KEY_SCHEMA", "LISTENERS",
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


#: The claims this process holds (result keys): a row computing its own dependencies holds its claim again.
_HELD: set[str] = set()


@contextlib.contextmanager
def claim(key: str) -> Iterator[bool]:
    """Hold the result `key` for this process while it computes it: True, or False while another process holds
    it. Several processes on one machine (`python -m study run --workers 2`) so never compute one result twice.
    A claim is an exclusive lock (flock) on a file under the results folder's `.claims/`: the kernel releases it
    when its process ends, however it ends, so a killed worker leaves nothing to clean up. The holder deletes the
    file before it lets go; a process that locked a file meanwhile deleted holds nothing and tries the path again."""
    import fcntl
    import os

    if key in _HELD:
        yield True
        return
    path = results_dir() / ".claims" / key
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        f = open(path, "a")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            yield False
            return
        try:
            if os.stat(path).st_ino == os.fstat(f.fileno()).st_ino:
                break  # the file still there: ours
        except FileNotFoundError:
            pass
        f.close()  # a holder deleted it as we opened it: try the path again
    _HELD.add(key)
    try:
        yield True
    finally:
        _HELD.discard(key)
        path.unlink(missing_ok=True)
        f.close()  # closing releases the lock


def _ours(path: Path, key: str) -> dict | None:
    if path.exists():
        record = json.loads(path.read_text())
        if record.get("key") == key:
            return record
    return None


def stored(path: Path, key: str, compute: Callable[[], dict], *, force: bool = False,
           cached_only: bool = False, name: str | None = None) -> dict | None:
    """The record at `path` if it holds `key` (made by `param_key`); else `compute()` plus key and provenance,
    written atomically.

    `force` (or `TRSP_FRESH=1`) recomputes; `cached_only` computes nothing and returns None instead.
    With a `name`, says which of the three happened ("[name] cached: ...", "computing", "not computed")."""
    path = Path(path)
    from .surgery import distributed
    # under FSDP rank 0 decides, so every process computes the same
    if distributed.agree(path.exists() and not (force or fresh())):
        record = json.loads(path.read_text())
        if record.get("key") == key:
            _say(name, f"cached: {path.parent.name}/{path.name}")
            return _returned(path, record)
    if cached_only or env_flag("TRSP_CACHED_ONLY"):  # the env flag: render from what exists, compute nothing
        _say(name, "not computed yet (skipped)")
        for listener in MISSING:
            listener(path, key)
        return None
    if distributed.active():  # every process of one FSDP run computes it together
        return _returned(path, _compute(path, key, compute, name))
    while True:
        with claim(key) as mine:
            if mine:
                if not (force or fresh()) and (record := _ours(path, key)) is not None:  # another process made it
                    return _returned(path, record)
                return _returned(path, _compute(path, key, compute, name))
        _say(name, "another process computes it: waiting")
        time.sleep(5)


#: CPU seconds of the results computed inside the one being computed, innermost last: a row that computes its
#: selection first records both, and the selection's also as `nested_cpu_s`, so a sum over records counts it once.
_NESTED: list[float] = []


def _compute(path: Path, key: str, compute: Callable[[], dict], name: str | None) -> dict:
    _say(name, "computing ...")
    t0, c0 = time.perf_counter(), time.process_time()
    _NESTED.append(0.0)
    try:
        record = compute()
    finally:
        nested = _NESTED.pop()
    cpu = time.process_time() - c0
    if _NESTED:
        _NESTED[-1] += cpu
    # cpu_s (this process's CPU seconds, all threads) does not grow when other jobs share the cores; wall_s does
    record.update({"key": key, "wall_s": time.perf_counter() - t0, "cpu_s": cpu, "nested_cpu_s": nested,
                   "peak_rss_gb": peak_rss_gb(),
                   "provenance": provenance()})
    write_json_atomic(path, record)
    return json.loads(path.read_text())  # what a rerun will see (JSON types)


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

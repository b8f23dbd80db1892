"""The results cache that the notebooks and `trsp compare` share.

A result is a JSON file `<results dir>/<kind>/<key>.json`, where the key hashes the parameters
and the library version: rerunning a notebook reuses it, changing one parameter computes only
what that parameter touches, and bumping `trsp_lib.__version__` invalidates everything. Files
carry their parameters and provenance (commit, versions, machine, wall time) and are written
atomically, so an interrupted run loses only the result in progress.
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
from .provenance import param_key, peak_rss_gb, provenance, write_json_atomic


def results_dir() -> Path:
    """`TRSP_RESULTS` if set (the tiny book build uses a scratch directory), else data/results/."""
    env = os.environ.get("TRSP_RESULTS")
    return Path(env) if env else data_dir() / "results"


def fresh() -> bool:
    """`TRSP_FRESH=1` (what `make book FRESH=1` sets) recomputes instead of reusing."""
    return os.environ.get("TRSP_FRESH", "") not in ("", "0")


def cached(kind: str, params: dict, compute: Callable[[], Any]) -> Any:
    """`compute()` once per (kind, params, library version); later calls read the stored result."""
    key = param_key({"kind": kind, "params": params, "version": __version__})
    path = results_dir() / kind / f"{key}.json"
    if path.exists() and not fresh():
        return json.loads(path.read_text())["result"]
    t0 = time.perf_counter()
    result = compute()
    write_json_atomic(path, {"kind": kind, "params": params, "key": key, "result": result,
                             "wall_s": time.perf_counter() - t0, "peak_rss_gb": peak_rss_gb(),
                             "provenance": provenance()})
    return json.loads(path.read_text())["result"]  # what a rerun will see (JSON types)

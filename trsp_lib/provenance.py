"""Where a result came from, and writing it so that an interrupted run leaves nothing half-done."""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import platform
import resource
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import transformers

from . import __version__

REPO = Path(__file__).resolve().parent.parent


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The repo's commit (with '+dirty' when the work tree differs), or None outside a checkout.

    Read once per process (the first call, made when a run starts): the code a run executes is the
    code it imported, even if the work tree is edited while it runs.
    """
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("TRSP_COMMIT")  # a copy of the tree without .git (a remote batch run) names it


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def provenance() -> dict:
    return {
        "trsp_lib": __version__, "commit": git_commit(), "torch": torch.__version__,
        "transformers": transformers.__version__, "python": platform.python_version(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


#: What a cache key records, versioned; every key `param_key` makes records it. Schema 2: every parameter in full
#: (each `TRSPConfig` field, the weights' dtype, the evaluation and validation texts), none left out at a default.
#: Changing what keys record bumps it and ships a rewrite of the stored records (tools/migrate_keys.py), so no
#: exception has to keep old keys alive.
KEY_SCHEMA = 2


def param_key(params: dict) -> str:
    """A short, stable hash of everything that determines a result (parameters + library version) and of the key
    schema. `params` may name its schema ("schema"); another schema's parameters are refused: migrate them."""
    schema = params.get("schema", KEY_SCHEMA)
    if schema != KEY_SCHEMA:
        raise ValueError(f"parameters of key schema {schema!r}, this code keys schema {KEY_SCHEMA}; "
                         "rewrite the stored records with tools/migrate_keys.py")
    return digest({**params, "schema": KEY_SCHEMA})


def digest(obj: object) -> str:
    """16 hex digits of the sha256 of `obj`'s canonical JSON (a schema-1 key was this digest of the bare parameters)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def env_flag(name: str) -> bool:
    """An on/off environment variable: set and not "0" means on (TRSP_FRESH, TQDM_DISABLE, ...)."""
    return os.environ.get(name, "") not in ("", "0")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write a file or a directory into; on success it
    replaces `path` (an existing directory is swapped out, then removed): readers see the old or
    the new, never half of either. On failure the temporary is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    _remove(tmp)
    try:
        yield tmp
        if path.is_dir():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            _remove(old)
        else:
            os.replace(tmp, path)
    finally:
        _remove(tmp)


def _remove(p: Path) -> None:
    if p.is_dir():
        shutil.rmtree(p, ignore_errors=True)
    elif p.exists():
        p.unlink()


def write_json_atomic(path: str | Path, obj) -> Path:
    """Write JSON next to its destination, then rename: readers see the old file or the new one."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    return Path(path)

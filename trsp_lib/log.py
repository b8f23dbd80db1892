"""The library's progress messages, with one switch to silence them (TRSP_QUIET=1).

The rendered book sets TRSP_QUIET=1 for its kernels (book/run_notebooks.py): a page shows results,
not which cache file each row came from. Nothing is lost: the provenance is in the results themselves.
"""
from __future__ import annotations

import os
import sys


def quiet() -> bool:
    """True when TRSP_QUIET is set to anything but '' or '0'."""
    return os.environ.get("TRSP_QUIET", "") not in ("", "0")


def say(*args: object, sep: str = " ", end: str = "\n") -> None:
    """print() to stdout, flushed, unless the library is quiet."""
    if not quiet():
        print(*args, sep=sep, end=end, file=sys.stdout, flush=True)

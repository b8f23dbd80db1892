"""The library's one quiet switch: TRSP_QUIET=1 silences its log lines and its progress bars.

The rendered book sets TRSP_QUIET=1 for its kernels (book/run_notebooks.py): a page shows results,
not which cache file each row came from or how fast a bar moved. Nothing is lost: the provenance is
in the results themselves. Every message and bar of the library goes through `say` and `progress`.
"""
from __future__ import annotations

import os
import sys
from typing import Any

from tqdm import tqdm  # text bars: notebook widgets would be saved into the rendered book


def quiet() -> bool:
    """True when TRSP_QUIET is set to anything but '' or '0'."""
    return os.environ.get("TRSP_QUIET", "") not in ("", "0")


def say(*args: object, sep: str = " ", end: str = "\n") -> None:
    """print() to stdout, flushed, unless the library is quiet."""
    if not quiet():
        print(*args, sep=sep, end=end, file=sys.stdout, flush=True)


def progress(iterable: Any = None, *, desc: str, unit: str = "step", total: int | None = None,
             leave: bool = True, **kw: Any) -> tqdm:
    """A text progress bar with a rate and an ETA (tqdm's, `kw` passed on), silent when the library is quiet."""
    return tqdm(iterable, desc=desc, unit=unit, total=total, leave=leave, disable=quiet(), dynamic_ncols=True, **kw)

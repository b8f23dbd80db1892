"""The book's one plotting style: full-width, high-resolution figures with legible text, and tables
that show every row and column instead of pandas' `N rows x M columns` truncation.

book/run_notebooks.py applies it to every kernel (`use()` from an IPython start-up file), so the
notebooks need no styling code; a notebook run by hand gets it with `from trsp_lib.style import use; use()`.
Sizes are in inches at the book's text column: a figure `width()` wide is shown at 1:1, so a 10 pt
tick label reads as 10 pt on the page.
"""
from __future__ import annotations

from typing import Any

#: The book theme's text column (about 740 CSS px at 96 px per inch, window 1280 px wide).
TEXT_WIDTH_IN = 7.7
#: PNG resolution: 150 dpi or more, so a figure stays sharp at full column width on a dense screen.
DPI = 160
#: Colours of reference lines: the dense model, the chance level, any other reference.
REFERENCE_COLOURS = {"dense": "black", "chance": "0.45", "reference": "0.3"}

RC: dict[str, Any] = {
    "figure.figsize": (TEXT_WIDTH_IN, TEXT_WIDTH_IN * 0.5),
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "font.size": 11,
    "axes.titlesize": 11,
    "axes.labelsize": 11,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "legend.fontsize": 10,
    "legend.framealpha": 0.9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "lines.linewidth": 1.6,
}

PANDAS: dict[str, Any] = {
    "display.max_rows": 500,          # a book table is shown whole, or cut by the notebook on purpose
    "display.max_columns": None,
    "display.show_dimensions": False,  # no "N rows x M columns" footer
    "display.max_colwidth": 80,
    "display.float_format": "{:.4g}".format,  # 0.125, 91.33, 1.045e+10: not 0.125000 or 10446301063.65
}


def use() -> None:
    """Apply the matplotlib and pandas settings above to this process (idempotent)."""
    import matplotlib
    import pandas as pd

    matplotlib.rcParams.update(RC)
    for key, value in PANDAS.items():
        pd.set_option(key, value)


def width(fraction: float = 1.0) -> float:
    """Figure width in inches for `fraction` of the text column."""
    return TEXT_WIDTH_IN * fraction


def figsize(aspect: float = 0.5, fraction: float = 1.0) -> tuple[float, float]:
    """(width, height) for a figure `fraction` of the column wide, height = aspect * width."""
    return width(fraction), width(fraction) * aspect


def reference_line(ax, y: float, label: str, kind: str = "reference", **kw: Any):
    """A horizontal dashed line at y, labelled at its right end inside the axes (no legend entry needed)."""
    colour = kw.pop("color", REFERENCE_COLOURS.get(kind, REFERENCE_COLOURS["reference"]))
    line = ax.axhline(y, color=colour, linestyle=kw.pop("linestyle", "--"), linewidth=kw.pop("linewidth", 1.0),
                      zorder=kw.pop("zorder", 1), **kw)
    ax.annotate(label, xy=(1, y), xycoords=("axes fraction", "data"), xytext=(-4, 3), textcoords="offset points",
                ha="right", va="bottom", color=colour, fontsize="small")
    return line


def chance_line(ax, tasks: tuple[str, ...] | list[str] | None = None, limit: int | None = None, seed: int = 0):
    """The zero-shot chance level (uniform guessing on the same items) as a reference line."""
    from .zeroshot import DEFAULT_TASKS, chance_level

    level = chance_level(tuple(tasks or DEFAULT_TASKS), limit, seed)
    return reference_line(ax, level, f"chance {level:.2f}", kind="chance")

"""The book's one plotting style: full-width, high-resolution figures with legible text, and tables
that show every row and column instead of pandas' `N rows x M columns` truncation.

book/run_notebooks.py applies it to every kernel (`use()` from an IPython start-up file), so the
notebooks need no styling code; a notebook run by hand gets it with `from study.style import use; use()`.
Sizes are in inches at the book's text column: a figure `width()` wide is shown at 1:1, so a 10 pt
tick label reads as 10 pt on the page.
"""
from __future__ import annotations

from typing import Any

#: The book theme's text column, measured by book/check_book.py at a 1280 px window: 665-700 CSS px, so 6.9 in at
#: 96 px per inch (662 px) is shown at 1:1 or larger and a 9 pt label reads as 9 pt or more.
TEXT_WIDTH_IN = 6.9
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


#: Human names of the zero-shot tasks.
TASK_NAMES = {"piqa": "PIQA", "winogrande": "WinoGrande", "hellaswag": "HellaSwag", "arc_easy": "ARC-e",
              "arc_challenge": "ARC-c", "boolq": "BoolQ", "openbookqa": "OpenBookQA", "lambada": "LAMBADA"}


def number(value: float, decimals: int = 2) -> str:
    """91.33 and 4,188.33 as decimals, 1.0e+10 beyond 100,000 (a perplexity that explodes stays readable), and
    2.7e-05 where the decimals would show 0 (a ratio of an exploded perplexity)."""
    if value is None or value != value:  # a missing cell, or NaN
        return "-"
    small = value != 0 and abs(value) < 0.5 * 10 ** -decimals
    return f"{value:.1e}" if abs(value) >= 1e5 or small else f"{value:,.{decimals}f}"


def method_name(label: str) -> str:
    """A row label's human name from the registry's titles ('sleb+ft' -> 'SLEB + fine-tune'); a study suffix
    such as ' (tuned)' is kept; a label that is no pipeline passes through."""
    from trsp_lib.pipelines import title

    base, sep, suffix = label.partition(" (")
    try:
        return title(base) + sep + suffix
    except ValueError:
        return label


def model_name(name: str | None) -> str:
    """A model's human name: the registry's title for a built-in ('smollm2-135m' -> 'SmolLM2-135M'), the last part
    of a hub name ('meta-llama/Llama-2-7b-hf' -> 'Llama-2-7b-hf'), "n/a" for none."""
    from trsp_lib.models import BUILTIN_MODELS

    if not name or name == "n/a":
        return "n/a"
    return BUILTIN_MODELS.get(name, {}).get("title") or name.rstrip("/").split("/")[-1]


def selection(label: str) -> str:
    """The registry selection behind a study label: 'trsp (tuned)' and 'trsp:kd' -> 'trsp'; 'dense' -> 'dense'."""
    from trsp_lib.pipelines import parse

    base = label.partition(" (")[0]
    return base if base == "dense" else parse(base).selection


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


def reference_line(ax, at: float, label: str, kind: str = "reference", vertical: bool = False, **kw: Any):
    """A dashed line at y = at (x = at if vertical), labelled at its end inside the axes (no legend entry needed)."""
    colour = kw.pop("color", REFERENCE_COLOURS.get(kind, REFERENCE_COLOURS["reference"]))
    style = {"color": colour, "linestyle": kw.pop("linestyle", "--"), "linewidth": kw.pop("linewidth", 1.0),
             "zorder": kw.pop("zorder", 1), **kw}
    line = ax.axvline(at, **style) if vertical else ax.axhline(at, **style)
    if vertical:
        ax.annotate(label, xy=(at, 1), xycoords=("data", "axes fraction"), xytext=(3, -4), textcoords="offset points",
                    ha="left", va="top", color=colour, fontsize="small")
    else:
        ax.annotate(label, xy=(1, at), xycoords=("axes fraction", "data"), xytext=(-4, 3), textcoords="offset points",
                    ha="right", va="bottom", color=colour, fontsize="small")
    return line


def plain_log_axis(ax, axis: str = "x") -> None:
    """Log scale with ticks at 1, 2, 5 x 10^k written as plain numbers (20, 50, 100), no minor labels."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    target = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    target.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
    target.set_minor_formatter(NullFormatter())


def chance_line(ax, tasks: tuple[str, ...] | list[str] | None = None, limit: int | None = None, seed: int = 0,
                vertical: bool = False):
    """The zero-shot chance level (uniform guessing on the same items) as a reference line."""
    from trsp_lib.zeroshot import DEFAULT_TASKS, chance_level

    level = chance_level(tuple(tasks or DEFAULT_TASKS), limit, seed)
    return reference_line(ax, level, f"chance {level:.2f}", kind="chance", vertical=vertical)


# The comparison table's columns, by the names a reader sees (the results keep the raw names).
COLUMNS = {"method": "method", "n_removed": "layers removed", "ppl_wiki": "PPL wiki", "ppl_news": "PPL news",
           "zs_avg": "zero-shot avg", "zs_se": "± s.e.", "speedup_prefill": "prefill speed-up",
           "ideal_prefill": "FLOP ideal", "prune_s": "CPU min"}


def readable(df):
    """A results table with human column names, method names and minutes: what a chapter shows."""
    out = df[[c for c in COLUMNS if c in df.columns]].copy()
    out["method"] = [method_name(m) for m in out["method"]]
    if "prune_s" in out:
        out["prune_s"] = out["prune_s"] / 60
    return out.rename(columns=COLUMNS)


def label_points(ax, xs, ys, labels, fontsize: float = 9, **kw: Any) -> list:
    """Write a label beside each point and let adjustText move them apart (and off the points), with a thin
    leader line where a label moved: a scatter of pipelines stays legible at >= 9 pt, no hand nudges."""
    from adjustText import adjust_text

    texts = [ax.text(x, y, text, fontsize=fontsize) for x, y, text in zip(xs, ys, labels)]
    adjust_text(texts, x=list(xs), y=list(ys), ax=ax, expand=(1.1, 1.3),
                arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "0.5"}, **kw)
    return texts


#: Above this a value is shown as a bound: a perplexity of 390493476.97 says only "collapsed".
ABSURD = 1e6


def fmt(value: float | None, digits: int = 3) -> str:
    """A table's number: `digits` significant digits without exponent (91.3, 0.469, 4,188), "> 10⁶" beyond
    `ABSURD`, "-" when missing."""
    import math

    if value is None or value != value:
        return "-"
    if abs(value) > ABSURD:
        return "> 10⁶"
    if value == 0 or isinstance(value, int):
        return f"{value:,}"
    places = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    return f"{value:,.{places}f}"


def table(df, caption: str, formats: dict[str, Any] | None = None, digits: int = 3):
    """A book table: `caption` above it, human column names (`COLUMNS`) and method names, numbers by `fmt`
    (or `formats[column]`, a callable or a format string), no index-name row, and no index at all when it is
    the default 0..n-1. Returns a pandas Styler (rendered as HTML)."""
    import html
    out = df.copy()
    if "method" in out.columns:
        out["method"] = [method_name(m) for m in out["method"]]
    if out.index.name == "method" or "method" in (out.index.names or []):
        out.index = [method_name(m) for m in out.index]
    out = out.rename(columns=COLUMNS)
    out.index.name = None
    out.columns.name = None
    formats = {COLUMNS.get(k, k): v for k, v in (formats or {}).items()}
    number = {c: formats.get(c, lambda v: html.escape(fmt(v, digits))) for c in out.columns
              if c in formats or out[c].dtype.kind in "fiu"}
    styler = out.style.format(number, na_rep="-").set_caption(caption)
    plain = out.index.equals(__import__("pandas").RangeIndex(len(out)))
    return styler.hide(axis="index") if plain else styler

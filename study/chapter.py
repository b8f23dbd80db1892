"""The block that ends every chapter: the command that reruns it, and what that costs, measured.

A chapter's cost is not typed by hand: every result record the chapter read or computed went through
`trsp_lib.results.stored`, which `study.USED` follows; each record carries the wall time its
computation took (`wall_s`) and the machine it ran on (`provenance`). The sum of those is what a
rerun from an empty cache costs on that machine. For the paper-scale commands (LLaMA-2 on a GPU,
never run here) the note gives an estimate of GPU hours from FLOPs, with the arithmetic spelled out.

    from study.chapter import rerun_note
    rerun_note("04_baselines", {"model": model, "ratio": ratio})               # last cell of a chapter
"""
from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass
from typing import Any

#: bf16 dense peak of one H100 SXM (TFLOP/s) and the fraction a training loop typically reaches.
H100_BF16_TFLOPS = 989.0
MFU = 0.4


@dataclass(frozen=True)
class Cost:
    """Measured seconds of the records a chapter used, how many there were, on which machines."""

    seconds: float
    n_records: int
    untimed: int          # records without a wall time or timings (counted as 0 s)
    cpus: tuple[int, ...]  # distinct `provenance.cpus` of the records
    gpu_seconds: float = 0.0  # of the records computed on a GPU (not in `seconds`)
    n_gpu: int = 0
    gpu: str = ""


def glue(**values: Any) -> None:
    """myst-nb `glue` of each value under its name, not displayed: the chapter's markdown quotes it with
    {glue:text}`name` (or {glue:text}`name:.1f`), so a sentence is written as prose and its numbers stay true.
    numpy scalars become Python numbers (their repr would not format); a figure or a table is glued as such."""
    from myst_nb import glue as _glue

    for name, value in values.items():
        if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
            value = value.item()
        _glue(name, value, display=False)


def record_seconds(record: dict) -> float | None:
    """`wall_s` of a result record; for an early speed row without it, the sum of its timed repetitions."""
    if record.get("wall_s") is not None:
        return float(record["wall_s"])
    body = record.get("result", record)
    proto = body.get("protocol") if isinstance(body, dict) else None
    if not proto:
        return None
    runs = proto.get("reps", 0) + proto.get("warmup", 0)
    return sum(t["median"] * runs for side in ("dense", "pruned") for t in body.get(side, {}).values())


def measured_cost(records: dict[str, dict] | None = None) -> Cost:
    """The cost of `records` (default: every record this process used, `study.USED`)."""
    from study import USED

    records = USED if records is None else records
    gpu = [r for r in records.values() if (r.get("provenance") or {}).get("cuda")]
    cpu = [r for r in records.values() if not (r.get("provenance") or {}).get("cuda")]
    times = [record_seconds(r) for r in cpu]
    cpus = sorted({r.get("provenance", {}).get("cpus") for r in cpu} - {None})
    return Cost(sum(t for t in times if t is not None), len(records), sum(t is None for t in times), tuple(cpus),
                sum(record_seconds(r) or 0.0 for r in gpu), len(gpu), gpu[0]["provenance"]["cuda"] if gpu else "")


def gpu_to_cpu() -> tuple[float, float]:
    """(low, high) ratio of 2-core CPU to GPU wall time, from the rows computed on both
    (data/results/gpu_check.json)."""
    from trsp_lib.results import results_dir

    check = json.loads((results_dir() / "gpu_check.json").read_text())
    ratios = [cpu / gpu for gpu, cpu in (r["wall_s (gpu, cpu)"] for r in check["rows"])]
    return min(ratios), max(ratios)


def elapsed_s() -> float | None:
    """Seconds since this process (the notebook's kernel) started; None without psutil (an accelerate dependency)."""
    try:
        import psutil
    except ImportError:
        return None
    return time.time() - psutil.Process().create_time()


def rerun_command(notebook: str, params: dict | None = None, out: str = "out.ipynb", env: str = "") -> str:
    """`papermill notebooks/<notebook>.ipynb <out> -y '<params as JSON>'`; `env` is put in front
    (e.g. HF_HUB_OFFLINE=0)."""
    name = notebook if notebook.endswith(".ipynb") else f"{notebook}.ipynb"
    cmd = f"papermill notebooks/{name} {out}"
    if params:
        cmd += f" -y {shlex.quote(json.dumps(params))}"
    return f"{env} {cmd}".strip()


def duration(seconds: float) -> str:
    """'45 s', '12 min', '2.3 h'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def gpu_hours(n_params: float, train_tokens: float, forward_tokens: float = 0.0, *,
              peak_tflops: float = H100_BF16_TFLOPS, mfu: float = MFU) -> tuple[float, str]:
    """(hours, the arithmetic in words): 6·N FLOPs per trained token, 2·N per forward-only token, at `mfu` of peak."""
    flops = 6 * n_params * train_tokens + 2 * n_params * forward_tokens
    hours = flops / (peak_tflops * 1e12 * mfu) / 3600
    text = (f"6 × {n_params:.3g} parameters × {train_tokens:.3g} trained tokens + 2 × {n_params:.3g} × "
            f"{forward_tokens:.3g} forward-only tokens = {flops:.2g} FLOP; at {mfu:.0%} of an H100's "
            f"{peak_tflops:.0f} bf16 TFLOP/s that is {hours:.2g} GPU hours")
    return hours, text


def regeneration_note(notebook: str, records: dict[str, dict] | None = None, check: dict | None = None) -> str | None:
    """What the regeneration of the plan (`data/results/fresh-check.json`) says of the results this chapter read
    (`records`, default `study.USED`), matched by key: how many were recomputed from nothing on this CPU and
    whether within the tolerances, and, once the chapters were executed from the regenerated rows alone
    (`fresh_check.py --book`), which of this chapter's glued words (its verdicts) and numbers changed. None when
    the chapter read no regenerated result (other parameters, the tiny book)."""
    from study import USED

    from .regeneration import check as committed_check

    try:
        check = committed_check() if check is None else check
    except FileNotFoundError:
        return None
    keys = {(r.get("key") or "") for r in (USED if records is None else records).values()}
    rows = [x for x in check["rows"] if x.get("key") in keys and x["within tolerance"] is not None]
    if not rows:
        return None
    beyond = [x for x in rows if not x["within tolerance"]]
    n, of = len(rows), len(keys - {''})
    counted = ("the one result this chapter reads has been" if of == 1 else
               f"all {of} results this chapter reads have been" if n == of else
               f"{n} of the {of} results this chapter reads {'has' if n == 1 else 'have'} been")
    text = (f"**Regenerated:** {counted} recomputed "
            f"from nothing on this 2-core CPU, {duration(sum(x.get('seconds on 2 cores') or 0.0 for x in rows))} of "
            "work; " + (("within" if n == 1 else "all within") + " the tolerances stated in advance" if not beyond else
                        f"{len(beyond)} beyond the tolerances stated in advance "
                        f"({', '.join(x['label'] for x in beyond)})")
            + " ({doc}`/reproducibility`).")
    glued = check["summary"].get("glued values")
    if glued:
        mine = [x for k in ("other values changed", "numbers beyond tolerance") for x in glued[k]
                if x["chapter"] == notebook]
        text += (" Executed from the regenerated rows alone, " + ("every value it states is the same (numbers within "
                 "1%)." if not mine else "it states otherwise: " + "; ".join(
                     f"`{x['name']}` {x['committed']} → {x['recomputed']}" for x in mine) + "."))
    return text


def note_markdown(notebook: str, params: dict | None = None, *, cost: Cost | None = None, page_s: float | None = None,
                  paper: dict | None = None) -> str:
    """The closing block as Markdown (`rerun_note` displays it). See `rerun_note` for the arguments."""
    cost = measured_cost() if cost is None else cost
    lines = ["## Rerun this chapter", "", "```bash", rerun_command(notebook, params), "```", ""]
    where = f"{'/'.join(map(str, cost.cpus))} CPU cores" if cost.cpus else "this machine"
    if cost.n_records:
        lines.append(f"**Cost, measured:** computing the {cost.n_records - cost.n_gpu} results this chapter reads that "
                     f"were computed on CPU took {duration(cost.seconds)} on {where} (the sum of the wall times "
                     f"recorded with each result, beside its provenance"
                     + (f"; {cost.untimed} without a recorded time" if cost.untimed else "") + ").")
        if cost.n_gpu:
            lo, hi = gpu_to_cpu()
            lines[-1] += (f" {cost.n_gpu} of them were computed on an {cost.gpu} in float32 "
                          f"({duration(cost.gpu_seconds)} there, shared by 8 processes); on 2 CPU cores they would "
                          f"take about {duration(lo * cost.gpu_seconds)}-{duration(hi * cost.gpu_seconds)} "
                          f"(the CPU / GPU ratio of the rows computed on both, {lo:.1f}-{hi:.1f}x, "
                          "data/results/gpu_check.json).")
    else:
        lines.append("**Cost, measured:** this chapter reads no cached result; it computes everything it shows.")
    if page_s is not None:
        lines[-1] += f" This page itself ran in {duration(page_s)}" + (" with those results cached." if cost.n_records
                                                                        else ".")
    regen = regeneration_note(notebook)
    if regen:
        lines += ["", regen]
    if paper:
        hours, text = gpu_hours(paper["n_params"], paper["train_tokens"], paper.get("forward_tokens", 0.0))
        lines += ["", f"**At the paper's scale** ({paper.get('what', 'LLaMA-2-7B on one GPU')}):", "", "```bash",
                  paper["command"], "```", "",
                  f"Estimate: {text}" + (f" ({paper['note']})" if paper.get("note") else "") + "."]
    return "\n".join(lines)


def rerun_note(notebook: str, params: dict | None = None, *, paper: dict | None = None, page_time: bool = True):
    """Display a chapter's closing block: its papermill rerun command and its measured cost.

    `notebook`: e.g. "04_baselines"; `params`: the parameters a rerun passes (`-y`), typically the
    parameters cell's values. The cost sums `wall_s` of every result record this kernel used
    (`study.USED`); `page_time` adds how long this kernel has run. `paper`: for a paper-scale
    command, {"command": str, "n_params": N, "train_tokens": T, "forward_tokens": F, "what": str,
    "note": str} gives a GPU-hour estimate with its arithmetic (`gpu_hours`).
    """
    from IPython.display import Markdown, display

    display(Markdown(note_markdown(notebook, params, page_s=elapsed_s() if page_time else None, paper=paper)))

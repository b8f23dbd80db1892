"""TRSP's gates, read from a run: which layers it removes, how their gates got there, and the figures that show it
(where the gate sits, the stage-2 fade, the gates and the losses at every optimizer step).

A run's `trajectory` is one dict per optimizer step ({"stage", "round", "step", "lm", "reg", "scales"}), as
`trsp_lib.method.trsp.prune` records it and as the cached rows hold it. Everything here returns values, tables and
figures; the chapters write the sentences. Figures are made closed (`new_figure`), so a chapter glues them
(`study.chapter.glue`) without their being shown a second time at the end of the cell.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import FancyBboxPatch

from .style import figsize, reference_line

NAN = float("nan")
#: Colours of the removed layers: the default cycle without its grey (the kept layers are grey).
COLOURS = [f"C{i}" for i in (0, 1, 2, 3, 4, 5, 6, 8, 9)]


def new_figure(size: tuple[float, float], **kw: Any) -> Figure:
    """A pyplot figure, closed at once: the notebook's inline backend renders it where it is glued, not again at
    the end of the cell (importing pyplot is what registers that renderer in a kernel)."""
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=size, **kw)
    plt.close(fig)
    return fig


def arrays(trajectory: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(gates [steps, layers], stage [steps], stage-1 round [steps], -1 in stage 2) of a trajectory."""
    scales = np.array([r["scales"] for r in trajectory], dtype=float)
    stage = np.array([r["stage"] for r in trajectory])
    rounds = np.array([-1 if r.get("round") is None else r["round"] for r in trajectory])
    return scales, stage, rounds


def listing(items) -> str:
    """[7, 20, 14] -> '7, 20 and 14'; ['LaCo', 'random'] -> 'LaCo and random'; [] -> 'none'."""
    words = [str(i) for i in items]
    return "none" if not words else words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def selections(trajectory: list[dict], removed: list[int], pool: list[int]) -> pd.DataFrame:
    """One row per removed layer, in selection order: the stage-1 round that selected it, its gate then, the
    smallest gate among the candidates still in the pool, and the margin between the two (how close the race was).
    `pool`: the layers that may be selected (the protected first and last layers excluded)."""
    scales, stage, rounds = arrays(trajectory)
    n_rounds = len(set(rounds[stage == 1].tolist()))
    out = []
    for k, layer in enumerate(removed):
        r = k if n_rounds == len(removed) else n_rounds - 1  # one-shot: every layer in the one round
        at = scales[(stage == 1) & (rounds == r)]
        at = at[-1] if len(at) else np.full(scales.shape[1], NAN)
        chosen = set(removed[:k + 1] if n_rounds == len(removed) else removed)
        rest = [at[i] for i in pool if i not in chosen]
        nxt = min(rest) if rest else NAN
        out.append({"layer": layer, "round": r + 1, "gate": at[layer], "next gate": nxt, "margin": nxt - at[layer]})
    return pd.DataFrame(out, columns=["layer", "round", "gate", "next gate", "margin"])


def run_selections(run: dict) -> pd.DataFrame:
    """`selections` of a cached TRSP row, its pool from its configuration (the protected first and last layers)."""
    cfg = run.get("params", {}).get("config", {})
    pool = list(range(cfg.get("protect_first", 0), run["n_layers"] - cfg.get("protect_last", 1)))
    return selections(run["trajectory"], list(run["removed"]), pool)


def step_change(trajectory: list[dict], removed: list[int]) -> float:
    """Median |change| of a stage-1 gate per optimizer step, over the layers not yet selected (NaN without steps)."""
    scales, stage, rounds = arrays(trajectory)
    s1 = scales[stage == 1]
    if len(s1) < 2:
        return NAN
    moves = np.abs(np.diff(s1, axis=0))
    live = np.ones_like(moves, dtype=bool)
    for k, layer in enumerate(removed):  # a selected layer's gate is frozen from the next round on
        live[rounds[stage == 1][1:] > k, layer] = False
    return float(np.median(moves[live])) if live.any() else NAN


def fade_steps(trajectory: list[dict], removed: list[int]) -> int:
    """Stage-2 steps until every removed layer's gate is 0 (the fade), or the stage-2 steps when it never is."""
    scales, stage, _ = arrays(trajectory)
    s2 = scales[stage == 2][:, removed] if removed else scales[stage == 2][:, :0]
    zero = np.flatnonzero((s2 == 0).all(axis=1)) if len(s2) else []
    return int(zero[0]) + 1 if len(zero) else len(s2)


def _num(record: dict | None, key: str) -> float:
    value = (record or {}).get(key)
    return NAN if value is None else float(value)


def items_per_task(record: dict | None) -> float:
    """Zero-shot items per task of a row (the smallest over its tasks; NaN when it has none)."""
    counts = list(((record or {}).get("zs_n") or {}).values())
    return float(min(counts)) if counts else NAN


def run_values(run: dict, dense: dict | None) -> dict[str, Any]:
    """What chapter 02 states about one TRSP run, as values to glue (NaN or 'none' where the run lacks them):
    its gates (`gate_values`), its losses (`loss_values`) and the pruned model against the dense one."""
    ppl, ppl_dense = _num(run, "ppl_wiki"), _num(dense, "ppl_wiki")
    model = {"trsp_ppl_wiki": ppl, "dense_ppl_wiki": ppl_dense, "ppl_ratio": ppl / ppl_dense if ppl_dense else NAN,
             "trsp_ppl_news": _num(run, "ppl_news"), "dense_ppl_news": _num(dense, "ppl_news"),
             "trsp_zs": _num(run, "zs_avg"), "dense_zs": _num(dense, "zs_avg"), "zs_items": items_per_task(run)}
    return {**gate_values(run), **loss_values(run["trajectory"], run["removed"]), **model}


def gate_values(run: dict) -> dict[str, Any]:
    """The layers a run removes, the margins of its selections, how far a gate moves per step, the gates at the
    end of stage 1 (kept and removed), the fade, and the removed layers' identity gap before deletion."""
    cfg = run.get("params", {}).get("config", {})
    n, removed = run["n_layers"], list(run["removed"])
    sel = run_selections(run)
    scales, stage, _ = arrays(run["trajectory"])
    end1 = scales[stage == 1][-1] if (stage == 1).any() else np.full(n, NAN)
    kept = [i for i in range(n) if i not in removed]
    gaps = [run.get("identity_gap", {}).get(str(i), NAN) for i in removed]
    return {"n_layers": n, "n_removed": len(removed), "n_kept": len(kept), "ratio_pct": 100 * run.get("ratio", NAN),
            "removed_order": listing(removed), "removed_sorted": listing(sorted(removed)),
            "margin_min": sel["margin"].min(), "margin_max": sel["margin"].max(),
            "margin_median": sel["margin"].median(), "step_change": step_change(run["trajectory"], removed),
            "gate_lr": cfg.get("gate_lr", NAN), "steps_per_round": cfg.get("steps_per_round", NAN),
            "kept_min": min(end1[kept], default=NAN), "kept_max": max(end1[kept], default=NAN),
            "removed_min": min(end1[removed], default=NAN), "removed_max": max(end1[removed], default=NAN),
            "fade_steps": fade_steps(run["trajectory"], removed), "stage2_steps": int((stage == 2).sum()),
            "gap_max": max(gaps, default=NAN), "groups": "overlap" if min(end1[kept], default=NAN) <= max(
                end1[removed], default=NAN) else "do not overlap"}


def loss_values(trajectory: list[dict], removed: list[int], window: int = 4) -> dict[str, float]:
    """Mean LM loss over the first `window` steps (every layer runs), the last `window` of stage 1 (the selected
    layers skipped), the first `window` of stage 2 (the selected layers back at their gates, fading) and every step
    after the fade (the selected layers gone): one batch per step, so a mean reads better than a step."""
    lm = np.array([r["lm"] for r in trajectory], dtype=float)
    _, stage, _ = arrays(trajectory)
    s1, s2 = lm[stage == 1], lm[stage == 2]

    def mean(x: np.ndarray) -> float:
        return float(x.mean()) if len(x) else NAN

    return {"lm_first": mean(s1[:window]), "lm_end1": mean(s1[-window:]), "lm_start2": mean(s2[:window]),
            "lm_faded": mean(s2[fade_steps(trajectory, removed):]), "lm_window": window}


def before_after(dense: dict | None, run: dict) -> pd.DataFrame:
    """Dense and pruned: layers, perplexity on the two test texts, zero-shot average (the book's column names)."""
    rows = [r for r in (dense, run) if r]
    return pd.DataFrame({"method": [r["method"] for r in rows],
                         "layers": [r["n_layers"] - r.get("n_removed", 0) for r in rows],
                         **{k: [_num(r, k) for r in rows] for k in ("ppl_wiki", "ppl_news", "zs_avg")}})


def _stage2_line(ax, stage: np.ndarray) -> None:
    if (stage == 2).any() and (stage == 1).any():
        reference_line(ax, int((stage == 1).sum()) - 0.5, "stage 2", vertical=True)


def trajectory_figure(trajectory: list[dict], removed: list[int]) -> Figure:
    """Every gate at every optimizer step: kept layers grey, removed layers in colour (legend: layer and round),
    a dot where each was selected, drawn on top; the dashed line is the start of stage 2."""
    scales, stage, rounds = arrays(trajectory)
    fig = new_figure(figsize(0.5), layout="constrained")
    ax = fig.add_subplot()
    steps = np.arange(len(scales))
    for i in range(scales.shape[1]):
        if i not in removed:
            ax.plot(steps, scales[:, i], color="0.7", lw=0.8, zorder=1)
    handles = [Line2D([], [], color="0.7", lw=0.8, label="kept layers")]
    for k, layer in enumerate(removed):
        (line,) = ax.plot(steps, scales[:, layer], lw=1.6, zorder=2, color=COLOURS[k % len(COLOURS)],
                          label=f"layer {layer} (round {k + 1})")
        at = np.flatnonzero((stage == 1) & (rounds == k))
        if len(at):
            ax.plot(at[-1], scales[at[-1], layer], "o", color=line.get_color(), mec="k", ms=6, zorder=4)
        handles.append(line)
    handles.append(Line2D([], [], ls="none", marker="o", color="0.5", mec="k", ms=6, label="selected"))
    _stage2_line(ax, stage)
    ax.set(xlabel="optimizer step", ylabel="gate value $s_i$", ylim=(-0.03, None))
    ax.legend(handles=handles, ncol=2 if len(handles) > 5 else 1, loc="lower left")
    return fig


def loss_figure(trajectory: list[dict]) -> Figure:
    """The language-model loss and the regularizer (lambda1 sum|s| in stage 1, lambda2 x identity gap in stage 2)
    at every optimizer step."""
    _, stage, _ = arrays(trajectory)
    fig = new_figure(figsize(0.36), layout="constrained")
    axes = fig.subplots(1, 2)
    steps = np.arange(len(trajectory))
    axes[0].plot(steps, [r["lm"] for r in trajectory])
    axes[0].set_ylabel("LM loss (nats per token)")
    axes[1].plot(steps, [r["reg"] for r in trajectory], color="C1")
    axes[1].set_ylabel("regularizer")
    for ax in axes:
        _stage2_line(ax, stage)
        ax.set_xlabel("optimizer step")
    return fig


def _gate_diagram(ax, title: str, branch: bool) -> None:
    """h -> F -> (x s) -> (+ h) for the branch gate; h -> F -> (+ h) -> (x s) for the output gate."""
    ax.set_axis_off()
    ax.set(xlim=(0, 10), ylim=(0, 4), title=title)
    scale, add = "$\\times s_i$", "$+$"
    nodes = [(0.9, "$h$"), (3.2, "$F_i$"), (5.6, scale if branch else add), (8.0, add if branch else scale)]
    for x, label in nodes:
        ax.add_patch(FancyBboxPatch((x - 0.7, 1.6), 1.4, 0.8, boxstyle="round,pad=0.1", fc="white",
                                    ec="tab:red" if label == scale else "0.3"))
        ax.text(x, 2, label, ha="center", va="center")
    for (a, _), (b, _) in zip(nodes, nodes[1:]):
        ax.annotate("", xy=(b - 0.8, 2), xytext=(a + 0.8, 2), arrowprops={"arrowstyle": "->"})
    ax.annotate("", xy=(9.9, 2), xytext=(8.8, 2), arrowprops={"arrowstyle": "->"})
    skip_to = nodes[3][0] if branch else nodes[2][0]  # where the residual h rejoins
    ax.annotate("", xy=(skip_to, 2.55), xytext=(0.9, 2.55),
                arrowprops={"arrowstyle": "->", "connectionstyle": "arc3,rad=-0.35", "color": "0.3"})
    ax.text(5, 0.8, "out = " + ("$h + s_i\\,F_i(h)$" if branch else "$s_i\\,(h + F_i(h))$"), ha="center")


def fade(stage2_steps: int, fade_fraction: float) -> tuple[int, list[float]]:
    """(K, s_i(k) / s_i(0) for k = 0..stage2_steps): the stage-2 fade reaches 0 after K = fade_fraction x steps."""
    k_end = max(1, round(fade_fraction * stage2_steps))
    return k_end, [1.0] + [max(0.0, 1 - (k + 1) / k_end) for k in range(stage2_steps)]


def placement_figure(stage2_steps: int, fade_fraction: float) -> Figure:
    """Where the gate multiplies (the paper's output gate, this study's branch gate) and the stage-2 fade."""
    fig = new_figure(figsize(0.36))
    axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1, 1, 0.8], "wspace": 0.35})
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.2, top=0.88)
    _gate_diagram(axes[0], "output gate (paper)", branch=False)
    _gate_diagram(axes[1], "branch gate (ours)", branch=True)
    k_end, curve = fade(stage2_steps, fade_fraction)
    axes[2].plot(range(len(curve)), curve, color="tab:red")
    axes[2].set(xlabel="stage-2 step", ylabel="$s_i\\,/\\,s_i(0)$", title="stage-2 fade")
    return fig


def placement_values(profile: str = "default") -> dict[str, Any]:
    """`placement_figure` with a profile's stage-2 steps and fade ("fig_placement"), where the fade reaches 0
    ("fade_k") and the stage-2 steps ("fade_total")."""
    from trsp_lib.profiles import load

    cfg, _ = load(profile)
    return {"fig_placement": placement_figure(cfg.stage2_steps, cfg.fade_fraction),
            "fade_k": fade(cfg.stage2_steps, cfg.fade_fraction)[0], "fade_total": cfg.stage2_steps}

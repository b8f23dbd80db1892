"""What a practitioner would use instead: the frontier chapter's rows, and its pipelines table (cost, Pareto front).

Every choice (the `lin` ridge and mode, the healing learning rate and KD temperature) is made by the declared
searches (`searches`), on validation perplexity only; test numbers are reported, never used to choose. The values
the chapter's prose quotes are computed in `verdicts`; the tables and the figure it shows are made here.
"""
from __future__ import annotations

import math

from trsp_lib.pipelines import parse

from .searches import setting_name
from .style import fmt, method_name


def frontier_run(P, ch: dict) -> dict:
    """The frontier chapter's runs, read from the plan (`runner.section`): the searches' table (lin, then the
    fine-tune and distillation learning rate / temperature on the chosen lin, the healing scope, and the point past
    the grid checked after the choice), the choices, and the pipeline rows (dense first)."""
    from .runner import metric, section

    past = [x for x in section(P, "frontier search", ch) if P.heal_edge and ch.get("kd")
            and x["label"].endswith(f"({setting_name(P.heal_edge)})") and x["method"] == f"{P.search_selection}+lin+kd"]
    chosen = [x for x in section(P, "frontier", ch) if x["label"] == f"{P.search_selection}+lin+kd"]
    edge = edge_check(chosen[0], past[-1], P.heal_edge, metric(P)) if past and chosen else None
    records = ch["records"]
    scope = [{**r, "chosen": r["chosen"] and "yes (scope)"} for r in records.get("scope", [])]
    return {"record": records.get("lin", []) + records.get("ft", []) + records.get("kd", []) + scope
            + (edge["record"] if edge else []), "lin": ch.get("lin"), "ft": ch.get("ft"), "kd": ch.get("kd"),
            "edge": edge, "scope": ch.get("scope"), "rows": section(P, "frontier", ch)}


def edge_check(chosen: dict, past: dict, point: dict, metric: str) -> dict:
    """The chosen distillation row against one point past the declared grid, read on validation only and after the
    choice (the rows keep the declared choice either way): does a wider grid move it? The record's line is marked
    as the check, never as chosen."""
    return {"point": point, "val": past.get(metric), "chosen_val": chosen.get(metric), "test": past.get("ppl_wiki"),
            "moves": past.get(metric, math.inf) < chosen.get(metric, math.inf),
            "record": [{"pipeline": past["method"], "setting": setting_name(point)
                        + " (past the grid, checked after the choice)", "PPL wiki (val)": past.get(metric),
                        "PPL news (val)": past.get("ppl_news_val"), "PPL wiki (test)": past.get("ppl_wiki"),
                        "PPL news (test)": past.get("ppl_news"), "chosen": ""}]}


def kd_pairs(records: list[dict], selections: str, lr_label: str):
    """Each selection alone, + fine-tune at the profile's lr (label `sel+ft{lr_label}`), + distillation, and
    + fine-tune at the lr chosen on validation where the plan has one: one line per selection."""
    import pandas as pd

    by = {x["label"]: x["ppl_wiki"] for x in records}
    out = []
    for sel in (x for x in selections.split(",") if x):
        alone, ft, kd = by.get(sel), by.get(f"{sel}+ft{lr_label}"), by.get(f"{sel}+kd")
        tuned = by.get(f"{sel}+ft")
        if None not in (alone, ft, kd):
            out.append({"selection": sel, "alone": alone, "+ fine-tune, lr chosen on validation": tuned,
                        "distillation / that": kd / tuned if tuned else None, "+ distillation": kd,
                        f"+ fine-tune{lr_label}": ft, f"distillation / fine-tune{lr_label}": kd / ft})
    return pd.DataFrame(out)


#: A healed perplexity above this leaves the model unusable whichever loss healed it (SmolLM2's dense: 26.75):
#: such a selection (LaCo's merge) is reported apart, not counted in the loss-against-loss ratios.
UNUSABLE = 1_000.0


def pareto_front(points: list[tuple[float, float]]) -> list[bool]:
    """For (cost, loss) points, True where no other point is at least as good in both and better in one."""
    def dominated(i: int) -> bool:
        ci, li = points[i]
        return any((c <= ci and q <= li) and (c < ci or q < li) for j, (c, q) in enumerate(points) if j != i)
    return [not dominated(i) for i in range(len(points))]


def on_gpu(row: dict) -> bool:
    """Whether a row was computed on a GPU (its provenance names one)."""
    return bool((row.get("provenance") or {}).get("cuda"))


def _steps(label: str) -> tuple[str, ...]:
    return tuple(s.name for s in parse(label).steps[1:])


def cpu_minutes(row: dict, rows: list[dict]) -> tuple[float, bool]:
    """(minutes on 2 CPU cores, estimated?) of a pipeline row. A row computed on a GPU is costed from the CPU
    rows beside it: its selection's own CPU row, plus each later step's CPU time taken from a CPU row with
    that step (lin from `x+lin`, ft from `x+ft`, kd from `x+kd` or `x+lin+kd` less lin, else at least ft's): a
    step's time does not depend on its settings (the same passes and optimizer steps)."""
    if not on_gpu(row):
        return row["prune_s"] / 60, False
    cpu = {r["method"]: r for r in rows if not on_gpu(r) and r["method"] != "dense"}
    by_steps = {_steps(m): r.get("ft_s") or 0.0 for m, r in cpu.items() if _steps(m)}
    lin, ft = by_steps.get(("lin",), 0.0), by_steps.get(("ft",), 0.0)
    kd = by_steps.get(("kd",)) or max(by_steps.get(("lin", "kd"), lin) - lin, 0.0)
    step_s = {"lin": lin, "ft": ft, "kd": kd or ft}  # no CPU kd row: at least a fine-tune's (same steps + a teacher)
    base = parse(row["method"]).selection  # trsp:kd is costed as TRSP's own run
    select = cpu.get(base, {}).get("prune_s", 0.0)
    return (select + sum(step_s[s] for s in _steps(row["method"]))) / 60, True


def heal_lr(row: dict) -> float | None:
    """The learning rate a healed row (or TRSP, which trains) ran at, from its key's config; None for the rest."""
    p = parse(row["method"])
    return (row.get("params") or {}).get("config", {}).get("lr") if p.trains else None


def pipelines_table(rows: list[dict]):
    """One line per pipeline (rows[0] is dense): perplexities, the validation score, cost, Pareto membership."""
    import pandas as pd

    dense = rows[0]
    costs = [cpu_minutes(r, rows) for r in rows[1:]]
    t = pd.DataFrame([{"pipeline": r.get("label", r["method"]), **describe(r["method"]), "PPL wiki": r["ppl_wiki"],
                       "PPL news": r["ppl_news"], "PPL wiki (val)": r.get("ppl_wiki_val"),
                       "zero-shot": r.get("zs_avg"), "lr": heal_lr(r), "CPU min": minutes,
                       "cost": "estimated" if estimated else "measured", "trains": parse(r["method"]).trains,
                       "TRSP": parse(r["method"]).selection == "trsp"}
                      for r, (minutes, estimated) in zip(rows[1:], costs)])
    t["x dense"] = t["PPL wiki"] / dense["ppl_wiki"]
    t["Pareto"] = ["yes" if p else "" for p in pareto_front(list(zip(t["CPU min"], t["PPL wiki"])))]
    return t.sort_values("PPL wiki").reset_index(drop=True)


def describe(label: str) -> dict[str, str]:
    """Human names for a row label: selection, weight edit, healing."""
    if label == "dense":
        return {"selection": "none (dense)", "compensation": "-", "healing": "-"}
    p = parse(label)
    return {"selection": p.select.title, "compensation": " + ".join(e.title for e in p.edits) or "none",
            "healing": p.heal.title if p.heal else "none"}


def search_table(run: dict):
    """The search record with the registry's names: every setting tried, its validation and test perplexity."""
    import pandas as pd

    t = pd.DataFrame(run["record"])
    t["pipeline"] = [method_name(x) for x in t["pipeline"]]
    return t


def shown(t, columns: list[str]):
    """A pipelines table (`pipelines_table`) as the chapter shows it: human names, the chosen columns."""
    out = t[columns].copy()
    out["pipeline"] = [method_name(x) for x in out["pipeline"]]
    return out.rename(columns={"x dense": "× dense"})


def kd_shown(pairs, lr_label: str):
    """The distillation-beside-fine-tune table (`kd_pairs`) as the chapter shows it: human selection names, the
    perplexities, then the ratios; a ratio between two unusable models (both above `UNUSABLE`) is left out."""
    ft, fair = f"+ fine-tune{lr_label}", "+ fine-tune, lr chosen on validation"
    out = pairs.copy()
    broken = out[[ft, "+ distillation"]].min(axis=1) >= UNUSABLE
    out.loc[broken, [f"distillation / fine-tune{lr_label}", "distillation / that"]] = None
    out["selection"] = [method_name(x) for x in out["selection"]]
    return out[["selection", "alone", ft, fair, "+ distillation", f"distillation / fine-tune{lr_label}",
                "distillation / that"]].rename(columns={
        fair: "+ fine-tune (lr chosen on validation)", "+ distillation": "+ KD",
        f"distillation / fine-tune{lr_label}": f"KD / fine-tune{lr_label}",
        "distillation / that": "KD / fine-tune (lr chosen on validation)"})


def best_healed(t):
    """The pipeline that spends TRSP's budget with the lowest validation perplexity: the chapter's answer."""
    scored = t[t["PPL wiki (val)"].notna() & t["trains"]]
    return scored.loc[scored["PPL wiki (val)"].idxmin()] if len(scored) else None


def _pipelines_panel(ax, t, best) -> None:
    """One panel of the frontier figure: the pipelines (TRSP's in red), the Pareto front and the answer's star."""
    for is_trsp, group in t.groupby("TRSP"):
        ax.scatter(group["CPU min"], group["PPL wiki"], s=36, zorder=3, color="tab:red" if is_trsp else "tab:blue",
                   label="TRSP's pipelines" if is_trsp else "other pipelines")
    front = t[t["Pareto"] == "yes"].sort_values("CPU min")
    ax.step(front["CPU min"], front["PPL wiki"], where="post", color="k", lw=1, zorder=2, label="Pareto front")
    if best is not None:
        ax.scatter([best["CPU min"]], [best["PPL wiki"]], s=150, marker="*", color="gold", edgecolor="k", zorder=5,
                   label="best at TRSP's budget (by validation)")


def pareto_figure(t, dense: dict):
    """Wiki test perplexity against CPU minutes (both log), one point per pipeline, the Pareto front, the dense model,
    and the answer (the best pipeline at TRSP's budget, by validation) drawn on top as a star. The pipelines that
    cost about as much as the answer and come close to it crowd: a second panel enlarges them (linear axes)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from .style import figsize, label_points, plain_log_axis, reference_line

    best = best_healed(t)
    near = t["CPU min"] < 0  # none
    if best is not None:
        cost, ppl = best["CPU min"], best["PPL wiki"]
        near = t["CPU min"].between(cost / 1.3, cost * 1.3) & (t["PPL wiki"] <= ppl * 1.4)
    zoom = near.sum() > 1
    fig, axes = plt.subplots(2 if zoom else 1, 1, figsize=figsize(1.0 if zoom else 0.6), layout="constrained",
                             height_ratios=(1.8, 1) if zoom else None, squeeze=False)
    ax = axes[0, 0]
    _pipelines_panel(ax, t, best)
    reference_line(ax, dense["ppl_wiki"], f"dense ({fmt(dense['ppl_wiki'])})", kind="dense")
    plain_log_axis(ax, "y")
    if (t["CPU min"] > 0).all():
        plain_log_axis(ax, "x")
        ax.set_xlim(t["CPU min"].min() / 1.5, t["CPU min"].max() * 3)
    ax.set(xlabel="CPU minutes to select, compensate and heal (log scale)", ylabel="perplexity, wiki test (log scale)")
    outside = t[~near] if zoom else t
    label_points(ax, outside["CPU min"], outside["PPL wiki"], [method_name(x) for x in outside["pipeline"]])
    ax.legend(loc="lower left", bbox_to_anchor=(0, 0.06))
    if zoom:
        box, inset = t[near], axes[1, 0]
        _pipelines_panel(inset, t, best)
        (x0, x1), (y0, y1) = ((box[c].min(), box[c].max()) for c in ("CPU min", "PPL wiki"))
        dx, dy = max(0.25 * (x1 - x0), 0.02 * x1), 0.08 * y1
        inset.set(xlim=(x0 - dx, x1 + dx), ylim=(y0 - dy, y1 + dy), xlabel="the dotted box, enlarged: CPU minutes")
        ax.add_patch(Rectangle((x0 - dx, y0 - dy), x1 - x0 + 2 * dx, y1 - y0 + 2 * dy, fill=False, ls=":", color="0.4"))
        label_points(inset, box["CPU min"], box["PPL wiki"], [method_name(x) for x in box["pipeline"]])
    return fig

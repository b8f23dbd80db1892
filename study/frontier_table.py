"""How the frontier chapter reads its rows: the pipelines table (cost, Pareto front) and the computed verdicts.

`frontier` computes the rows (every choice on validation); this module only reads them: each sentence of
chapter 9 that states a result is built here from the rows, so a rerun with other parameters restates it.
"""
from __future__ import annotations

from trsp_lib.pipelines import parse


def second_verdict(t, pipelines: str) -> list[str]:
    """The second model's lines: each pipeline against its selection alone, then every distillation row (at its
    learning rate) against the + fine-tune row of the same selection (fixed pairs, reported on test: no choice is
    made here, the settings came from the first model)."""
    ppl = dict(zip(t["pipeline"], t["PPL wiki"]))
    lines = [f"- `{label}`: {ppl[label]:.2f} against `{parse(label).base}` alone {ppl[parse(label).base]:.2f} "
             f"({ppl[label] / ppl[parse(label).base]:.2f}x)." for label in pipelines.split(",")
             if label in ppl and parse(label).base in ppl]
    rows = t.set_index("pipeline")
    for label, k in rows[rows.index.str.endswith("kd")].iterrows():
        ft = f"{parse(label).base}+ft"
        if ft in rows.index:
            f = rows.loc[ft]
            lines.append(f"- `{label}` at lr {k.lr:g} against `{ft}` at lr {f.lr:g}: {k['PPL wiki']:.2f} against "
                         f"{f['PPL wiki']:.2f} ({k['PPL wiki'] / f['PPL wiki']:.2f}x).")
    return lines


#: A healed perplexity above this leaves the model unusable whichever loss healed it (SmolLM2's dense: 26.75):
#: such a selection (LaCo's merge) is reported apart, not counted in the loss-against-loss ratios.
UNUSABLE = 1_000.0


def kd_verdict(pairs) -> str:
    """The distillation-beside-fine-tune table's sentence: wins and ratio ranges over the usable selections,
    then the broken ones apart (their ratios would read as huge wins between two unusable models)."""
    from .style import number

    def span(x) -> str:
        return f"{x.min():.2f}" if round(x.min(), 2) == round(x.max(), 2) else f"{x.min():.2f}-{x.max():.2f}"

    usable = pairs[pairs[["+ fine-tune", "+ distillation"]].min(axis=1) < UNUSABLE].sort_values("alone")
    broken = pairs.drop(usable.index)
    r, fair = usable["distillation / fine-tune"], usable["distillation / that"].dropna()
    text = (f"Distillation gives the lower perplexity after {int((r < 1).sum())} of {len(usable)} selections against the "
            f"comparison chapter's fine-tune (ratio {span(r)}), but that fine-tune ran at the profile's learning rate. "
            if len(usable) else "")
    if len(usable) > 2:
        trend = ("grows steadily" if r.is_monotonic_decreasing else "grows, not steadily" if r.iloc[-1] < r.iloc[0]
                 else "does not grow")
        text += (f"Its lead {trend} as the selection gets worse: {r.iloc[0]:.2f}x after the best selection alone "
                 f"(`{usable.selection.iloc[0]}`), {r.iloc[-1]:.2f}x after the worst usable one (`{usable.selection.iloc[-1]}`). ")
    if len(fair):
        where = ", ".join(usable.loc[fair.index, "selection"])
        text += (f"Where the fine-tune's learning rate was searched on validation too ({where}), distillation still "
                 f"wins, by less: {span(fair)}x the fine-tune's perplexity. " if (fair < 1).all()
                 else f"Where the fine-tune's learning rate was searched on validation too ({where}), the ratio is "
                 f"{span(fair)}. ")
    for _, b in broken.iterrows():
        text += (f"After `{b.selection}` both stay unusable (alone {number(b.alone)}; + fine-tune "
                 f"{number(b['+ fine-tune'])}, + distillation {number(b['+ distillation'])}): neither loss repairs its "
                 "model at this budget, so its ratio is left out. ")
    return text.strip()


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


def scope_name(row: dict) -> str:
    """' (last 3 + head)' for a row healed only in its last layers and LM head; '' for the rest."""
    last = (row.get("params") or {}).get("config", {}).get("heal_last", 0)
    return f" (last {last} + head)" if last else ""


def pipelines_table(rows: list[dict]):
    """One line per pipeline (rows[0] is dense): perplexities, the validation score, cost, Pareto membership."""
    import pandas as pd

    dense = rows[0]
    costs = [cpu_minutes(r, rows) for r in rows[1:]]
    t = pd.DataFrame([{"pipeline": r["method"] + scope_name(r), **describe(r["method"]), "PPL wiki": r["ppl_wiki"],
                       "PPL news": r["ppl_news"], "PPL wiki (val)": r.get("ppl_wiki_val"),
                       "zero-shot": r.get("zs_avg"), "lr": heal_lr(r), "CPU min": minutes,
                       "cost": "estimated" if estimated else "measured", "trains": parse(r["method"]).trains,
                       "TRSP": parse(r["method"]).selection == "trsp"}
                      for r, (minutes, estimated) in zip(rows[1:], costs)])
    t["x dense"] = t["PPL wiki"] / dense["ppl_wiki"]
    t["Pareto"] = ["yes" if p else "" for p in pareto_front(list(zip(t["CPU min"], t["PPL wiki"])))]
    return t.sort_values("PPL wiki").reset_index(drop=True)


def findings(t, run: dict, free_goal: float = 55.0, budget_goal: float = 1.6, heal_grid: list[dict] | None = None,
             scope_lrs: list[float] | None = None) -> list[str]:
    """The chapter's verdict: the best training-free and the best healed pipeline, each picked on validation
    (test only reports), TRSP's best pipeline, and the settings the searches chose (and whether a chosen
    learning rate sits at the edge of `heal_grid`, where a wider grid might have done better)."""
    def best(group):
        return group.loc[group["PPL wiki (val)"].idxmin()]

    scored = t[t["PPL wiki (val)"].notna()]
    trains = scored["trains"]  # TRSP trains while it selects: it spends the budget too
    free, healed, trsp = scored[~trains], scored[trains], scored[scored["TRSP"]]
    lines = []
    if len(free):
        b = best(free)
        lines.append(f"- **Training-free:** the best pipeline by validation is `{b.pipeline}`: wiki test perplexity "
                     f"{b['PPL wiki']:.2f} ({b['x dense']:.2f}x dense) in {b['CPU min']:.1f} CPU minutes; the goal was "
                     f"at most {free_goal:g}, " + ("reached." if b["PPL wiki"] <= free_goal
                                                  else f"missed by {b['PPL wiki'] - free_goal:.1f}."))
    if len(healed):
        b = best(healed)
        lines.append(f"- **With TRSP's budget** (the same steps and tokens): the best by validation is `{b.pipeline}`: "
                     f"{b['PPL wiki']:.2f} ({b['x dense']:.2f}x dense); the goal was at most {budget_goal:g}x, "
                     + ("reached." if b["x dense"] <= budget_goal else f"missed ({b['x dense']:.2f}x)."))
    if len(trsp):
        b = best(trsp)
        lines.append(f"- **TRSP's best pipeline here** (by validation) is `{b.pipeline}` at {b['PPL wiki']:.2f}; "
                     + ("it is on the Pareto front." if b["Pareto"] else
                        "it is not on the Pareto front: another pipeline is both cheaper and better."))
    ppl = dict(zip(t["pipeline"], t["PPL wiki"]))
    if {"trsp", "trsp+lin"} <= set(ppl):
        hurts = ppl["trsp+lin"] > ppl["trsp"]
        lines.append(f"- **`lin` after TRSP** {'hurts' if hurts else 'helps'}: {ppl['trsp']:.2f} -> {ppl['trsp+lin']:.2f}. "
                     + ("Its maps make TRSP's kept layer before each cut reproduce the dense model's state after it, "
                        "but TRSP has retrained every kept weight, so the layers above expect TRSP's own states, not "
                        "the dense ones. Fitting to TRSP's own model before deletion instead gives nothing to fit: with the default "
                        "fade, stage 2 takes P's gates to 0, so that model already equals the deleted one (T = I)."
                        if hurts else ""))
    lines += scope_lines(t, run, scope_lrs)
    lin = run["lin"]
    lines.append(f"- Chosen on validation: `lin` with alpha = {lin['alpha']:g}, "
                 + ("fitted in sequence" if lin["sequential"] else "every map from the dense model's states")
                 + "".join(f"; {name} lr {c['lr']:g} at temperature {c['temperature']:g}"
                           for name, c in (("fine-tune", run["ft"]), ("distillation", run["kd"])) if c))
    lrs = sorted({h["lr"] for h in heal_grid or []})
    edge = [name for name, c in (("fine-tune", run["ft"]), ("distillation", run["kd"])) if c and lrs and c["lr"] == lrs[-1]]
    past = run.get("edge")
    if edge and past and past["val"] is not None:
        lines[-1] += (f". The {' and '.join(edge)} learning rate is the largest of the grid ({lrs[-1]:g}); one step past "
                      f"it, lr {past['point']['lr']:g} gives validation perplexity {past['val']:.2f} against "
                      f"{past['chosen_val']:.2f}: " + (
                          "a wider grid would move the choice, so the healed rows below are short of their best "
                          f"(that point's wiki test: {past['test']:.2f}); they keep the declared grid's choice."
                          if past["moves"] else "the choice stands, so the grid's edge is not what limits the rows."))
    elif edge:
        lines[-1] += (f". The {' and '.join(edge)} learning rate is the largest of the grid ({lrs[-1]:g}): a larger one "
                      "was not tried, so the healed rows may be short of their best.")
    return lines


def scope_lines(t, run: dict, lrs: list[float] | None = None) -> list[str]:
    """The healing-scope line: the chosen last-k row against the same distillation with every weight healing (and
    whether its learning rate sits at an end of the scope's grid `lrs`)."""
    scope = run.get("scope")
    if not scope:
        return []
    rows = t.set_index("pipeline")
    label = [p for p in rows.index if p.endswith(f" (last {scope['last']} + head)")]
    full = label[0].split(" (")[0] if label else None
    if not label or full not in rows.index:
        return []
    a, b = rows.loc[label[0]], rows.loc[full]
    return [f"- **Healing scope** (Lu et al.): training only the last {scope['last']} layers and the LM head "
            f"(lr {scope['lr']:g}, chosen on validation) gives {a['PPL wiki']:.2f} against {b['PPL wiki']:.2f} with "
            f"every weight, in {a['CPU min']:.1f} against {b['CPU min']:.1f}"
            f"{' (estimated: that row ran on a GPU)' if b['cost'] == 'estimated' else ''} CPU minutes"
            + (f"; its lr is at an end of its grid ({', '.join(f'{x:g}' for x in sorted(lrs))}), so a wider grid "
               "might do better." if lrs and len(lrs) > 1 and scope["lr"] in (min(lrs), max(lrs)) else ".")]


def describe(label: str) -> dict[str, str]:
    """Human names for a row label: selection, weight edit, healing."""
    if label == "dense":
        return {"selection": "none (dense)", "compensation": "-", "healing": "-"}
    p = parse(label)
    return {"selection": p.select.title, "compensation": " + ".join(e.title for e in p.edits) or "none",
            "healing": p.heal.title if p.heal else "none"}

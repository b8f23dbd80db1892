"""What a practitioner would use instead: the declared searches and the pipelines table.

Every choice (the `lin` ridge and mode, the healing learning rate and KD temperature) is made by
`pick_on_validation`, which reads only the validation perplexity; test numbers are reported, never
used to choose. `pareto_front` marks the pipelines that no other beats on both cost and quality.
"""
from __future__ import annotations

import math

from .compare import compare
from .pipelines import parse

VALIDATION = "ppl_wiki_val"  # the one metric every tuning decision in the frontier chapter reads


def pick_on_validation(candidates: list[tuple[dict, dict]], metric: str = VALIDATION) -> tuple[dict, dict]:
    """The (setting, row) with the lowest validation perplexity; ties go to the earlier (simpler) setting."""
    scored = [(row.get(metric, math.inf), i) for i, (_, row) in enumerate(candidates)]
    if not scored or all(math.isinf(s) for s, _ in scored):
        raise ValueError(f"no candidate has {metric}; compute the rows first")
    return candidates[min(scored)[1]]


def search(label: str, grid: list[dict], what: str, **compare_kw) -> tuple[list[dict], dict]:
    """Run `label` once per grid point (`what` = "lin" or "heal"); return the record and the chosen point.

    The record lists every setting with its validation and test perplexity (the chapter plots it)."""
    selection = parse(label).select.name.split(":")[0]
    candidates = []
    searched = compare_kw.pop("searched", None)
    for point in grid:
        rows = compare(methods=[selection], finetune_baselines=False, pipelines=[label], **{what: point}, **compare_kw)
        candidates.append((point, next((r for r in rows if r["method"] == label), {})))  # {}: not computed yet
        if searched is not None:  # every row the search read (its selection's own row too)
            searched += [r for r in rows if r["method"] != "dense"]
    best, _ = pick_on_validation(candidates)
    record = [{"pipeline": label, "setting": setting_name(point), "PPL wiki (val)": row.get("ppl_wiki_val"),
               "PPL news (val)": row.get("ppl_news_val"), "PPL wiki (test)": row.get("ppl_wiki"),
               "PPL news (test)": row.get("ppl_news"), "chosen": "yes" if point == best else ""}
              for point, row in candidates]
    return record, best


def setting_name(point: dict) -> str:
    """{'alpha': 0.0, 'sequential': False} -> 'alpha 0, from dense'; {'lr': 1e-4, 'temperature': 1} -> 'lr 1e-04, T 1'."""
    if "alpha" in point:
        return f"alpha {point['alpha']:g}, " + ("sequential" if point["sequential"] else "from dense")
    return f"lr {point['lr']:.0e}, T {point['temperature']:g}"


def study(model: str, ratio: float, selections: str, search_selection: str, lin_grid: list[dict],
          heal_grid: list[dict], lin_pipelines: str, healed_pipelines: str, heal_edge: dict | None = None,
          **compare_kw) -> dict:
    """The frontier chapter's runs, in order: the three declared searches on validation text (lin, then
    the fine-tune and distillation learning rates / temperature on the chosen lin), the plain rows, every
    selection + lin, and the healed pipelines with the chosen settings. Returns records, choices and rows.
    `heal_edge`: one distillation point past the grid, checked on validation after the choice (`edge_check`)."""
    common = {"model": model, "ratios": [ratio], "speed": False, **compare_kw}
    searched: list[dict] = []
    lin_record, lin_best = search(f"{search_selection}+lin", lin_grid, "lin", searched=searched, **common)
    healed = [p for p in healed_pipelines.split(",") if p]
    ft_record, ft_best, kd_record, kd_best = [], None, [], None
    if any(p.endswith("+ft") for p in healed):  # each healing search runs only if a pipeline uses it
        ft_grid = [h for h in heal_grid if h.get("temperature", 1.0) == 1.0]
        ft_record, ft_best = search(f"{search_selection}+lin+ft", ft_grid, "heal", lin=lin_best, searched=searched,
                                    **common)
    if any(p.endswith("kd") for p in healed):
        kd_record, kd_best = search(f"{search_selection}+lin+kd", heal_grid, "heal", lin=lin_best, searched=searched,
                                    **common)
    rows = compare(methods=selections, finetune_baselines=True, **common)
    rows += compare(methods=selections, finetune_baselines=False, pipelines=lin_pipelines, lin=lin_best, **common)
    for label in healed:
        heal = kd_best if label.endswith("kd") else ft_best
        rows += compare(methods=selections, finetune_baselines=False, pipelines=[label], lin=lin_best, heal=heal,
                        **common)
    unique = list({r["key"]: r for r in rows}.values())
    edge = edge_check(f"{search_selection}+lin+kd", kd_best, heal_edge, lin=lin_best, searched=searched, **common) \
        if kd_best and heal_edge else None
    return {"record": lin_record + ft_record + kd_record + (edge["record"] if edge else []), "lin": lin_best,
            "ft": ft_best, "kd": kd_best, "edge": edge, "rows": unique, "searched": searched}


def edge_check(label: str, chosen: dict, edge: dict, **compare_kw) -> dict:
    """The chosen healing point against one point past the declared grid, on validation only and after the choice,
    so the rows keep the declared choice either way: does a wider grid move it? {'point', 'val', 'chosen_val',
    'test', 'moves', 'record'} (the record's line is marked as the check, never as chosen)."""
    record, best = search(label, [chosen, edge], "heal", **compare_kw)
    mine, past = record
    past = {**past, "setting": past["setting"] + " (past the grid, checked after the choice)", "chosen": ""}
    return {"point": edge, "val": past["PPL wiki (val)"], "chosen_val": mine["PPL wiki (val)"],
            "test": past["PPL wiki (test)"], "moves": best == edge, "record": [past]}


def second_model(model: str, base_methods: str, base_finetune: str, pipelines: str, lin: dict, heal: dict,
                 at_profile_lr: str = "", **compare_kw) -> list[dict]:
    """Rows of another model (dense first): the comparison chapter's plain and +ft rows of `base_methods`,
    then each pipeline with the settings chosen on the first model's validation text (transferred, not searched
    again: each Gemma-3 search point costs about as much as its row). `at_profile_lr`: healed pipelines run
    again at the profile's learning rate, the + fine-tune rows', which separates the loss from the transferred lr."""
    common = {"model": model, "ratios": [0.25], "speed": False, **compare_kw}
    rows = compare(methods=base_methods, finetune_baselines=base_finetune.split(",") if base_finetune else False,
                   **common)
    runs = [(label, heal) for label in pipelines.split(",") if label]
    runs += [(label, {**heal, "lr": None}) for label in at_profile_lr.split(",") if label]
    for label, h in runs:
        rows += compare(methods=[parse(label).base.split(":")[0]], finetune_baselines=False, pipelines=[label],
                        lin=lin, heal=h if parse(label).heal else None, **common)[1:]
    return list({r["key"]: r for r in rows}.values())


def second_verdict(t, pipelines: str) -> list[str]:
    """The second model's lines: each pipeline against its selection alone, then every distillation row (at its
    learning rate) against the best + fine-tune row shown (reported on test; no choice is made here: the settings
    came from the first model)."""
    ppl = dict(zip(t["pipeline"], t["PPL wiki"]))
    lines = [f"- `{label}`: {ppl[label]:.2f} against `{parse(label).base}` alone {ppl[parse(label).base]:.2f} "
             f"({ppl[label] / ppl[parse(label).base]:.2f}x)." for label in pipelines.split(",")
             if label in ppl and parse(label).base in ppl]
    ft = t[t["pipeline"].str.endswith("+ft")]
    if len(ft):
        f = ft.loc[ft["PPL wiki"].idxmin()]
        lines += [f"- `{k.pipeline}` at lr {k.lr:g} against the best + fine-tune row here (`{f.pipeline}`, lr {f.lr:g}, "
                  f"{f['PPL wiki']:.2f}): {k['PPL wiki']:.2f}, {k['PPL wiki'] / f['PPL wiki']:.2f}x."
                  for _, k in t[t["pipeline"].str.endswith("kd")].iterrows()]
    return lines


def kd_beside_ft(selections: str, lin: dict, kd: dict, tuned_ft: dict[str, dict] | None = None, **compare_kw):
    """Each selection alone, + fine-tune (the comparison chapter's control, at the profile's learning rate) and
    + distillation (at the learning rate and temperature chosen on validation): (one line per selection, the rows).
    `tuned_ft`: selection -> compare kwargs of its + fine-tune row at a learning rate chosen on validation (the
    main rows'), shown as a further column where given: the comparison in which both losses had a search."""
    import pandas as pd

    common = {"ratios": [0.25], "speed": False, **compare_kw}
    out, read = [], []
    for sel in (x for x in selections.split(",") if x):
        rows = compare(methods=[sel], finetune_baselines=True, **common)
        rows += compare(methods=[sel], finetune_baselines=False, pipelines=[f"{sel}+kd"], lin=lin, heal=kd, **common)[1:]
        read += rows
        by = {r["method"]: r for r in rows}
        tuned = None
        if sel in (tuned_ft or {}):
            found = compare(methods=[sel], finetune_baselines=False, pipelines=[f"{sel}+ft"],
                            **{**common, **tuned_ft[sel]})
            read += found
            tuned = next((r["ppl_wiki"] for r in found if r["method"] == f"{sel}+ft"), None)
        if {sel, f"{sel}+ft", f"{sel}+kd"} <= set(by):
            ft, d = by[f"{sel}+ft"]["ppl_wiki"], by[f"{sel}+kd"]["ppl_wiki"]
            out.append({"selection": sel, "alone": by[sel]["ppl_wiki"], "+ fine-tune": ft, "+ distillation": d,
                        "distillation / fine-tune": d / ft, "+ fine-tune, lr chosen on validation": tuned,
                        "distillation / that": d / tuned if tuned else None})
    return pd.DataFrame(out), read


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
        text += (f"Its lead grows as the selection gets worse: {r.iloc[0]:.2f}x after the best selection alone "
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
    base = parse(row["method"]).base.split(":")[0]  # trsp:kd is costed as TRSP's own run
    select = cpu.get(base, {}).get("prune_s", 0.0)
    return (select + sum(step_s[s] for s in _steps(row["method"]))) / 60, True


def heal_lr(row: dict) -> float | None:
    """The learning rate a healed row (or TRSP, which trains) ran at, from its key's config; None for the rest."""
    p = parse(row["method"])
    trains = p.heal or p.select.name.startswith("trsp")
    return (row.get("params") or {}).get("config", {}).get("lr") if trains else None


def pipelines_table(rows: list[dict]):
    """One line per pipeline (rows[0] is dense): perplexities, the validation score, cost, Pareto membership."""
    import pandas as pd

    dense = rows[0]
    costs = [cpu_minutes(r, rows) for r in rows[1:]]
    t = pd.DataFrame([{"pipeline": r["method"], **describe(r["method"]), "PPL wiki": r["ppl_wiki"],
                       "PPL news": r["ppl_news"], "PPL wiki (val)": r.get("ppl_wiki_val"),
                       "zero-shot": r.get("zs_avg"), "lr": heal_lr(r), "CPU min": minutes,
                       "cost": "estimated" if estimated else "measured"}
                      for r, (minutes, estimated) in zip(rows[1:], costs)])
    t["x dense"] = t["PPL wiki"] / dense["ppl_wiki"]
    t["Pareto"] = ["yes" if p else "" for p in pareto_front(list(zip(t["CPU min"], t["PPL wiki"])))]
    t["TRSP"] = t["pipeline"].str.startswith("trsp")
    return t.sort_values("PPL wiki").reset_index(drop=True)


def findings(t, run: dict, free_goal: float = 55.0, budget_goal: float = 1.6, heal_grid: list[dict] | None = None) -> list[str]:
    """The chapter's verdict: the best training-free and the best healed pipeline, each picked on validation
    (test only reports), TRSP's best pipeline, and the settings the searches chose (and whether a chosen
    learning rate sits at the edge of `heal_grid`, where a wider grid might have done better)."""
    def best(group):
        return group.loc[group["PPL wiki (val)"].idxmin()]

    scored = t[t["PPL wiki (val)"].notna()]
    trains = (scored["healing"] != "none") | scored["TRSP"]  # TRSP trains while it selects: it spends the budget too
    free, healed, trsp = scored[~trains], scored[trains], t[t["TRSP"]]
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
        b = trsp.loc[trsp["PPL wiki"].idxmin()]
        lines.append(f"- **TRSP's best pipeline here** is `{b.pipeline}` at {b['PPL wiki']:.2f}; "
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


def describe(label: str) -> dict[str, str]:
    """Human names for a row label: selection, weight edit, healing."""
    if label == "dense":
        return {"selection": "none (dense)", "compensation": "-", "healing": "-"}
    p = parse(label)
    names = {"ft": "fine-tune (LM loss)", "kd": "distillation (KL to dense)"}
    sel = {"trsp:kd": "TRSP, KD loss in stage 2", "trsp": "TRSP"}.get(p.base, p.base)
    return {"selection": sel, "compensation": "lin (closed form)" if p.edits else "none",
            "healing": names.get(p.heal.name if p.heal else None, "none")}

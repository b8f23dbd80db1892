"""What the chapters state, computed from their rows: each sentence of a verdict is built here, so a rerun with
other parameters restates it (the frontier chapter's findings, distillation against fine-tuning, the second model).
"""
from __future__ import annotations

from trsp_lib.pipelines import parse

from .frontier import UNUSABLE


def second_verdict(t, pipelines: str) -> list[str]:
    """The second model's lines: each pipeline against its selection alone, then every distillation row (at its
    learning rate) against the + fine-tune row of the same selection (fixed pairs, reported on test: no choice is
    made here, the settings came from the first model)."""
    ppl = dict(zip(t["pipeline"], t["PPL wiki"]))
    lines = [f"- `{label}`: {ppl[label]:.2f} against `{parse(label).base}` alone {ppl[parse(label).base]:.2f} "
             f"({ppl[label] / ppl[parse(label).base]:.2f}x)." for label in pipelines.split(",")
             if label in ppl and parse(label).base in ppl]
    rows = t.set_index("pipeline")
    for label, k in rows.iterrows():
        p = parse(label.partition(" (")[0])  # a label may carry its lr: "sleb+kd (lr 2e-5)"
        ft = next((x for x in rows.index if x.startswith(f"{p.base}+ft")), None)
        if p.heal is not None and p.heal.name == "kd" and ft:
            f = rows.loc[ft]
            lines.append(f"- `{label}` at lr {k.lr:g} against `{ft}` at lr {f.lr:g}: {k['PPL wiki']:.2f} against "
                         f"{f['PPL wiki']:.2f} ({k['PPL wiki'] / f['PPL wiki']:.2f}x).")
    return lines


def kd_verdict(pairs, lr_label: str) -> str:
    """The distillation-beside-fine-tune table's sentence. The claim is made against the fine-tune whose learning
    rate was chosen on validation (where the plan has one); the fine-tune at the profile's lr (`lr_label`) is the
    weaker control, said as such; the broken selections apart (their ratios read as huge wins between two unusable
    models)."""
    from .style import number

    def span(x) -> str:
        return f"{x.min():.2f}" if round(x.min(), 2) == round(x.max(), 2) else f"{x.min():.2f}-{x.max():.2f}"

    usable = pairs[pairs[[f"+ fine-tune{lr_label}", "+ distillation"]].min(axis=1) < UNUSABLE].sort_values("alone")
    broken = pairs.drop(usable.index)
    fair, weak = usable["distillation / that"].dropna(), usable[f"distillation / fine-tune{lr_label}"]
    text = ""
    if len(fair):
        where = ", ".join(usable.loc[fair.index, "selection"])
        text += (f"Against fine-tuning at its validated learning rate ({where}), distillation's perplexity is "
                 f"{span(fair)}x the fine-tune's: " + ("distillation wins. " if (fair < 1).all() else
                                                       "distillation loses. " if (fair > 1).all() else "mixed. "))
    if len(usable):
        text += (f"Against the fine-tune{lr_label} (not searched, a weaker control) it gives the lower perplexity "
                 f"after {int((weak < 1).sum())} of {len(usable)} selections (ratio {span(weak)})"
                 + ("; where both were measured, most of that gap is the fine-tune's learning rate, not the loss. "
                    if len(fair) and fair.min() > weak.loc[fair.index].max() else ". "))
    for _, b in broken.iterrows():
        text += (f"After `{b.selection}` both stay unusable (alone {number(b.alone)}; + fine-tune{lr_label} "
                 f"{number(b[f'+ fine-tune{lr_label}'])}, + distillation {number(b['+ distillation'])}): neither loss "
                 "repairs its model at this budget, so its ratio is left out. ")
    return text.strip()


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
        lines.append(f"- **`lin` after TRSP** {'hurts' if hurts else 'helps'}: {ppl['trsp']:.2f} -> "
                     f"{ppl['trsp+lin']:.2f}. "
                     + ("Its maps make TRSP's kept layer before each cut reproduce the dense model's state after it, "
                        "but TRSP has retrained every kept weight, so the layers above expect TRSP's own states, not "
                        "the dense ones. Fitting to TRSP's own model before deletion instead gives nothing to fit: "
                        "with the default fade, stage 2 takes P's gates to 0, so that model already equals the "
                        "deleted one (T = I)."
                        if hurts else ""))
    lines += scope_lines(t, run, scope_lrs)
    lin = run["lin"]
    lines.append(f"- Chosen on validation: `lin` with alpha = {lin['alpha']:g}, "
                 + ("fitted in sequence" if lin["sequential"] else "every map from the dense model's states")
                 + "".join(f"; {name} lr {c['lr']:g} at temperature {c['temperature']:g}"
                           for name, c in (("fine-tune", run["ft"]), ("distillation", run["kd"])) if c))
    lrs = sorted({h["lr"] for h in heal_grid or []})
    edge = [name for name, c in (("fine-tune", run["ft"]), ("distillation", run["kd"]))
            if c and lrs and c["lr"] == lrs[-1]]
    past = run.get("edge")
    if edge and past and past["val"] is not None:
        lines[-1] += (f". The {' and '.join(edge)} learning rate is the largest of the grid ({lrs[-1]:g}); "
                      f"one step past it, lr {past['point']['lr']:g} gives validation perplexity {past['val']:.2f} "
                      f"against {past['chosen_val']:.2f}: " + (
                          "a wider grid would move the choice, so the healed rows below are short of their best "
                          f"(that point's wiki test: {past['test']:.2f}); they keep the declared grid's choice."
                          if past["moves"] else "the choice stands, so the grid's edge is not what limits the rows."))
    elif edge:
        lines[-1] += (f". The {' and '.join(edge)} learning rate is the largest of the grid ({lrs[-1]:g}): "
                      "a larger one was not tried, so the healed rows may be short of their best.")
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

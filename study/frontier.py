"""What a practitioner would use instead: the declared searches and the rows of the frontier chapter.

Every choice (the `lin` ridge and mode, the healing learning rate and KD temperature) is made by
`pick_on_validation`, which reads only the validation perplexity; test numbers are reported, never
used to choose. `frontier_table` reads the rows (the table, the Pareto front, the verdicts).
"""
from __future__ import annotations

import math

from trsp_lib.compare import compare
from trsp_lib.pipelines import parse

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
    selection = parse(label).selection
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
    scope = f", last {point['last']} layers + head" if point.get("last") else ""
    return f"lr {point['lr']:.0e}, T {point['temperature']:g}{scope}"


def study(model: str, ratio: float, selections: str, search_selection: str, lin_grid: list[dict],
          heal_grid: list[dict], lin_pipelines: str, healed_pipelines: str, heal_edge: dict | None = None,
          heal_scope: dict | None = None, **compare_kw) -> dict:
    """The frontier chapter's runs, in order: the three declared searches on validation text (lin, then
    the fine-tune and distillation learning rates / temperature on the chosen lin), the plain rows, every
    selection + lin, and the healed pipelines with the chosen settings. Returns records, choices and rows.
    `heal_edge`: one distillation point past the grid, checked on validation after the choice (`edge_check`).
    `heal_scope` {"last": k, "lrs": [...]}: the distillation row healing only the last k layers and the LM head
    (Lu et al.), its learning rate searched on validation; the chosen row joins the pipelines."""
    if heal_scope and not {"last", "lrs"} <= set(heal_scope):
        raise ValueError(f"heal_scope needs 'last' and 'lrs', got {heal_scope}; e.g. {{'last': 3, 'lrs': [3e-4, 1e-3]}}")
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
    scope_record, scope = [], None
    if kd_best and heal_scope:
        points = [{**kd_best, "lr": lr, "last": heal_scope["last"]} for lr in heal_scope["lrs"]]
        scope_record, scope = search(f"{search_selection}+lin+kd", points, "heal", lin=lin_best, searched=searched,
                                     **common)
        scope_record = [{**r, "chosen": r["chosen"] and "yes (scope)"} for r in scope_record]
        rows += compare(methods=[search_selection], finetune_baselines=False, pipelines=[f"{search_selection}+lin+kd"],
                        lin=lin_best, heal=scope, **common)[1:]
    unique = list({r["key"]: r for r in rows}.values())
    edge = edge_check(f"{search_selection}+lin+kd", kd_best, heal_edge, lin=lin_best, searched=searched, **common) \
        if kd_best and heal_edge else None
    return {"record": lin_record + ft_record + kd_record + scope_record + (edge["record"] if edge else []),
            "lin": lin_best, "ft": ft_best, "kd": kd_best, "edge": edge, "scope": scope, "rows": unique,
            "searched": searched}


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
        rows += compare(methods=[parse(label).selection], finetune_baselines=False, pipelines=[label],
                        lin=lin, heal=h if parse(label).heal else None, **common)[1:]
    return list({r["key"]: r for r in rows}.values())


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

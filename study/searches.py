"""The declared searches: every setting the study chooses is chosen here, on validation perplexity only.

TRSP's knobs (one at a time, then greedily together), the healing controls' learning rate, and the frontier's
`lin` and healing grids all go through `pick_on_validation`; test numbers are recorded beside, never read.
The searches take an `evaluate` callable or compare's keywords, so the same procedure runs from a notebook
(cached rows) or from a batch driver that computes rows in parallel.
"""
from __future__ import annotations

import math
from collections.abc import Callable

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
    """{'alpha': 0.0, 'sequential': False} -> 'alpha 0, from dense';
    {'lr': 1e-4, 'temperature': 1} -> 'lr 1e-04, T 1'."""
    if "alpha" in point:
        return f"alpha {point['alpha']:g}, " + ("sequential" if point["sequential"] else "from dense")
    scope = f", last {point['last']} layers + head" if point.get("last") else ""
    return f"lr {point['lr']:.0e}, T {point['temperature']:g}{scope}"


def edge_check(label: str, chosen: dict, edge: dict, **compare_kw) -> dict:
    """The chosen healing point against one point past the declared grid, on validation only and after the choice,
    so the rows keep the declared choice either way: does a wider grid move it? {'point', 'val', 'chosen_val',
    'test', 'moves', 'record'} (the record's line is marked as the check, never as chosen)."""
    record, best = search(label, [chosen, edge], "heal", **compare_kw)
    mine, past = record
    past = {**past, "setting": past["setting"] + " (past the grid, checked after the choice)", "chosen": ""}
    return {"point": edge, "val": past["PPL wiki (val)"], "chosen_val": mine["PPL wiki (val)"],
            "test": past["PPL wiki (test)"], "moves": best == edge, "record": [past]}


#: Round 1 of the TRSP search: one knob at a time away from the default (`TRSPConfig` fields). The
#: stage split keeps TRSP's 48 optimizer steps at 8 layers (n * steps_per_round + stage2_steps).
KNOBS: dict[str, list[dict]] = {
    "lambda1": [{"lambda1": 0.01}, {"lambda1": 0.02}, {"lambda1": 0.1}],
    "stage split": [{"steps_per_round": 2, "stage2_steps": 32}, {"steps_per_round": 3, "stage2_steps": 24},
                    {"steps_per_round": 5, "stage2_steps": 8}],
    "gate lr": [{"gate_lr": 3e-3}, {"gate_lr": 3e-2}],
    "stage-2 mode": [{"stage2_mode": "sequential"}],
    "fade fraction": [{"fade_fraction": 0.25}, {"fade_fraction": 1.0}],
}


#: The two earlier ablations that helped on their own, together (run in round 1 whatever happens).
JOINT: list[dict] = [{"stage2_mode": "sequential", "lambda1": 0.01}]


MAX_RUNS = 24


#: The healing controls' learning rates (the profile's 2e-5 included), as many runs as TRSP's widest knob + 1.
HEAL_LRS = (2e-5, 5e-5, 1e-4, 3e-4)


def name(point: dict) -> str:
    """{'lambda1': 0.01, 'stage2_mode': 'sequential'} -> 'lambda1=0.01, stage2_mode=sequential'; {} -> 'default'."""
    return (", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(point.items()))
            or "default")


def _val(row: dict | None) -> float:
    return math.inf if row is None else row.get(VALIDATION, math.inf)


def search_trsp(evaluate: Callable[[list[dict]], list[dict | None]]) -> dict:
    """The declared TRSP search: round 1 (default, each knob's values, the joint pair) in one batch; round 2
    adds knobs greedily in order of their round-1 gain, keeping each only if validation improves. The winner
    is the run with the lowest validation perplexity of all (the greedy path only proposes candidates).

    Returns {"best": overrides, "record": [one dict per run: setting, round, val and test perplexity]}."""
    first = [{}] + [p for points in KNOBS.values() for p in points] + JOINT
    seen = {name(p): (p, r, 1) for p, r in zip(first, evaluate(first))}
    base = _val(seen["default"][1])
    gains = {}
    for knob, points in KNOBS.items():
        p = min(points, key=lambda q: _val(seen[name(q)][1]))
        if _val(seen[name(p)][1]) < base:
            gains[knob] = (p, base - _val(seen[name(p)][1]))
    current, score = {}, base
    for p, _ in sorted(gains.values(), key=lambda v: -v[1]):
        cand = {**current, **p}
        if name(cand) not in seen:
            if len(seen) >= MAX_RUNS:
                break
            seen[name(cand)] = (cand, evaluate([cand])[0], 2)
        if _val(seen[name(cand)][1]) < score:
            current, score = cand, _val(seen[name(cand)][1])
    current = min((p for p, _, _ in seen.values()), key=lambda q: _val(seen[name(q)][1]))  # the best run of all
    record = [{"setting": key, "round": rnd, "PPL wiki (val)": _val(r), "PPL news (val)": (r or {}).get("ppl_news_val"),
               "PPL wiki (test)": (r or {}).get("ppl_wiki"), "PPL news (test)": (r or {}).get("ppl_news"),
               "chosen": "yes" if key == name(current) else ""} for key, (p, r, rnd) in seen.items()]
    return {"best": current, "record": record, "rows": [r for _, r, _ in seen.values() if r]}


def trsp_point(point: dict, model: str = "smollm2-135m", ratio: float = 0.25, machine: dict | None = None,
               **kw) -> dict | None:
    """One TRSP run of the search: the default profile with `point` applied, perplexity only (val and test).
    `machine`: overrides that do not change the arithmetic (e.g. {"device": "cuda", "autocast": "none"})."""
    rows = compare(model=model, ratios=[ratio], methods=[], pipelines=["trsp"], finetune_baselines=False,
                   overrides={**(machine or {}), **point}, limit=0, speed=False, **kw)
    return next((r for r in rows if r["method"] == "trsp"), None)


def search_heal(selection: str, model: str = "smollm2-135m", ratio: float = 0.25, machine: dict | None = None,
                **kw) -> tuple[list[dict], dict]:
    """The learning rate of `selection`+ft (the equal-budget fine-tune control), chosen on validation."""
    grid = [{"lr": lr, "temperature": 1.0} for lr in HEAL_LRS]
    return search(f"{selection}+ft", grid, "heal", model=model, ratios=[ratio], limit=0, speed=False,
                  overrides=machine, **kw)

"""The declared searches: every setting the study chooses is chosen here, on validation perplexity only.

TRSP's knobs (one at a time, then greedily together), the healing controls' learning rate, and the frontier's
`lin` and healing grids all go through `pick_on_validation`; test numbers are recorded beside, never read.
The candidates are rows of the plan (`plan`); `runner.choices` reads them and applies these procedures, so the
same procedure runs whether the rows are cached or computed on the way.
"""
from __future__ import annotations

import math
from collections.abc import Callable

VALIDATION = "ppl_wiki_val"  # the one metric every tuning decision in the frontier chapter reads


def pick_on_validation(candidates: list[tuple[dict, dict]], metric: str = VALIDATION) -> tuple[dict, dict]:
    """The (setting, row) with the lowest validation perplexity; ties go to the earlier (simpler) setting."""
    scored = [(row.get(metric, math.inf), i) for i, (_, row) in enumerate(candidates)]
    if not scored or all(math.isinf(s) for s, _ in scored):
        raise ValueError(f"no candidate has {metric}; compute the rows first")
    return candidates[min(scored)[1]]


def record(candidates: list[tuple[dict, dict]], chosen: dict | None, metric: str = VALIDATION) -> list[dict]:
    """A search's table from its (setting, record) candidates: validation beside test, the chosen one marked.
    Test is reported here, never read by `pick_on_validation`."""
    return [{"pipeline": x["method"], "setting": setting_name(point), "PPL wiki (val)": x.get(metric),
             "PPL news (val)": x.get("ppl_news_val"), "PPL wiki (test)": x.get("ppl_wiki"),
             "PPL news (test)": x.get("ppl_news"), "chosen": "yes" if point == chosen else ""}
            for point, x in candidates]


def setting_name(point: dict) -> str:
    """{'alpha': 0.0, 'sequential': False} -> 'alpha 0, from dense';
    {'lr': 1e-4, 'temperature': 1} -> 'lr 1e-04, T 1'."""
    if "alpha" in point:
        return f"alpha {point['alpha']:g}, " + ("sequential" if point["sequential"] else "from dense")
    scope = f", last {point['last']} layers + head" if point.get("last") else ""
    return f"lr {point['lr']:.0e}, T {point['temperature']:g}{scope}"


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


def search_trsp(evaluate: Callable[[list[dict]], list[dict | None]], metric: str = VALIDATION) -> dict:
    """The declared TRSP search: round 1 (default, each knob's values, the joint pair) in one batch; round 2
    adds knobs greedily in order of their round-1 gain, keeping each only if validation improves. The winner
    is the run with the lowest validation perplexity of all (the greedy path only proposes candidates).

    Returns {"best": overrides, "record": [one dict per run: setting, round, val and test perplexity]}."""
    def _val(row: dict | None) -> float:
        return math.inf if row is None else row.get(metric, math.inf)

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

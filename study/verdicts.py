"""The values the frontier chapter's prose quotes, computed from its rows: numbers as the tables show them (three
significant digits, `style.fmt`), names as the registry titles them, and verdict words ("reached", "hurts", "wins").
The sentences are written in the chapter's markdown, which glues these values; a value the rows do not have (the
tiny profile computes no second model) is "n/a", never an error.
"""
from __future__ import annotations

import math

from .frontier import UNUSABLE
from .style import fmt, method_name

NA = "n/a"
#: The goals declared before the rows were computed: a training-free pipeline at most this wiki test perplexity,
#: and one at TRSP's budget at most this many times the dense model's.
FREE_GOAL, BUDGET_GOAL = 55.0, 1.6
#: Two one-seed perplexities within this fraction of each other are a tie: the main rows' seeds move a
#: pipeline's perplexity by a few percent.
TIE = 0.05


def num(value, digits: int = 3) -> str:
    """A prose number: `fmt` (as in the tables), "n/a" where there is none."""
    return NA if value is None or (isinstance(value, float) and math.isnan(value)) else fmt(value, digits)


def lr(value) -> str:
    """A learning rate as written in the settings: 0.0003 -> '3e-04'."""
    return NA if value is None or value != value else f"{value:.0e}"


def names(labels) -> str:
    """Human names joined: 'SLEB and ShortGPT'; 'none' for no label."""
    labels = [method_name(x) for x in labels]
    return " and ".join([", ".join(labels[:-1]), labels[-1]] if len(labels) > 1 else labels) or "none"


def compare(ratio, better: str = "wins", worse: str = "loses", tie: str = "ties") -> str:
    """A verdict word for `ratio` (lower is better), within `TIE` of 1 a tie."""
    if ratio is None or ratio != ratio:
        return NA
    return tie if abs(ratio - 1) <= TIE else better if ratio < 1 else worse


def _best(group):
    return group.loc[group["PPL wiki (val)"].idxmin()] if len(group) else None


def answer(t, dense: dict) -> dict:
    """The chapter's answer, from the pipelines table `t` (`frontier.pipelines_table`): the best training-free and
    the best healed pipeline, each picked on validation (test only reports), TRSP's best (plain TRSP has no
    validation score, so it is never picked), the goals, and `lin` after TRSP."""
    scored = t[t["PPL wiki (val)"].notna()]
    picks = {"free": _best(scored[~scored["trains"]]), "best": _best(scored[scored["trains"]]),
             "trsp": _best(scored[scored["TRSP"]])}
    items = sum((dense.get("zs_n") or {}).values())  # zero-shot items over all tasks
    zs = dense.get("zs_avg")
    out = {"dense_ppl": num(dense["ppl_wiki"]), "dense_zs": num(zs),
           "zs_se": num(math.sqrt(zs * (1 - zs) / items), 1) if zs and items else NA}
    for key, b in picks.items():
        out.update({f"{key}_name": method_name(b.pipeline) if b is not None else NA,
                    f"{key}_ppl": num(None if b is None else b["PPL wiki"]),
                    f"{key}_x": num(None if b is None else b["x dense"]),
                    f"{key}_min": num(None if b is None else b["CPU min"], 2)})
    free, best, trsp = picks["free"], picks["best"], picks["trsp"]
    out.update(free_goal=f"{FREE_GOAL:g}", budget_goal=f"{BUDGET_GOAL:g}",
               free_goal_verdict=NA if free is None else "reached" if free["PPL wiki"] <= FREE_GOAL else "missed",
               budget_goal_verdict=NA if best is None else "reached" if best["x dense"] <= BUDGET_GOAL else "missed",
               trsp_front=NA if trsp is None else "on" if trsp["Pareto"] else "not on",
               trsp_gap=num(None if best is None or trsp is None else trsp["PPL wiki"] / best["PPL wiki"]))
    ppl = dict(zip(t["pipeline"], t["PPL wiki"]))
    alone, lin = ppl.get("trsp"), ppl.get("trsp+lin")
    out.update(trsp_alone_ppl=num(alone), trsp_lin_ppl=num(lin), trsp_lin_verdict=NA if None in (alone, lin) else
               "changes nothing" if num(alone) == num(lin) else "hurts" if lin > alone else "helps")
    return out


def settings(P, run: dict) -> dict:
    """The settings the searches chose on validation, the grid they chose from, the check past its edge, and the
    training budget every healed row spends (TRSP's: its optimizer steps and tokens)."""
    lin, ft, kd, edge = run.get("lin") or {}, run.get("ft") or {}, run.get("kd") or {}, run.get("edge")
    trained = next((r for r in run["rows"] if r.get("ft_steps")), {})
    steps = trained.get("ft_steps")
    config = (trained.get("params") or {}).get("config", {})
    return {"lin_alpha": f"{lin['alpha']:g}" if lin else NA,
            "lin_mode": NA if not lin else "fitted in sequence" if lin["sequential"]
            else "fitted on the dense model's states",
            "ft_lr": lr(ft.get("lr")), "kd_lr": lr(kd.get("lr")), "kd_T": f"{kd['temperature']:g}" if kd else NA,
            "grid_lrs": ", ".join(lr(x) for x in sorted({h["lr"] for h in P.heal_grid})),
            "edge_lr": lr(edge["point"]["lr"]) if edge else NA, "edge_val": num(edge and edge["val"]),
            "edge_chosen_val": num(edge and edge["chosen_val"]),
            "edge_verdict": NA if not edge or edge["val"] is None else "would move" if edge["moves"] else "stands",
            "budget_steps": steps or NA, "budget_tokens": f"{trained['ft_tokens']:,}" if steps else NA,
            "budget_batch": config.get("batch_size", 0) * config.get("grad_accum", 0) or NA,
            "budget_seq": config.get("seq_len", NA), "profile_lr": lr(P.lr()),
            "n_removed": trained.get("n_removed", NA), "n_layers": trained.get("n_layers", NA),
            "last_layer": trained["n_layers"] - 1 if "n_layers" in trained else NA, "tie_pct": f"{TIE:.0%}",
            "limit": P.limit or "all", "main_limit": P.main_limit or "all"}


def scope(t, run: dict, lrs) -> dict:
    """Healing only the last k layers and the head (Lu et al.) against the same distillation of every weight."""
    s, rows = run.get("scope"), t.set_index("pipeline")
    label = next((p for p in rows.index if s and p.endswith(f" (last {s['last']} + head)")), None)
    full = label and label.split(" (")[0]
    a = rows.loc[label] if label else None
    b = rows.loc[full] if full in rows.index else None
    lrs = sorted(lrs or [])
    where = (NA if not s or not lrs else "the only point of" if len(lrs) == 1 else "at the low end of"
             if s["lr"] == lrs[0] else "at the high end of" if s["lr"] == lrs[-1] else "inside")
    return {"scope_last": s["last"] if s else NA, "scope_lr": lr(s and s["lr"]), "scope_grid": ", ".join(map(lr, lrs))
            or NA, "scope_where": where, "scope_ppl": num(None if a is None else a["PPL wiki"]),
            "scope_full_ppl": num(None if b is None else b["PPL wiki"]),
            "scope_min": num(None if a is None else a["CPU min"], 2),
            "scope_full_min": num(None if b is None else b["CPU min"], 2),
            "scope_full_cost": NA if b is None else b["cost"]}


def span(values) -> str:
    """'0.920' or '0.590-0.780': the range of `values` as the tables show them."""
    values = [v for v in values if v == v]
    if not values:
        return NA
    lo, hi = num(min(values)), num(max(values))
    return lo if lo == hi else f"{lo}–{hi}"


KD_KEYS = ("kd_fair_where", "kd_fair_span", "kd_fair_verdict", "kd_weak_wins", "kd_weak_n", "kd_weak_span",
           "kd_weak_on_fair", "kd_lr_share", "kd_broken", "kd_broken_alone", "kd_broken_ft", "kd_broken_kd",
           "kd_broken_layers", "kd_reverse_alone", "kd_reverse_ft", "kd_reverse_kd")


def kd(pairs, lr_label: str, records: list[dict] = ()) -> dict:
    """Distillation beside fine-tuning (`frontier.kd_pairs`): against the fine-tune whose learning rate was chosen on
    validation (where the plan has one), against the fine-tune at the profile's lr (a weaker control, and how much
    of distillation's lead over it is that learning rate), and the selections both leave unusable (their ratios
    would read as huge wins between two broken models), with the layers those removed (from `records`)."""
    if pairs is None or not len(pairs):
        return dict.fromkeys(KD_KEYS, NA)
    weak_col, ft_col = f"distillation / fine-tune{lr_label}", f"+ fine-tune{lr_label}"
    usable = pairs[pairs[[ft_col, "+ distillation"]].min(axis=1) < UNUSABLE].sort_values("alone")
    broken = pairs.drop(usable.index)
    fair, weak = usable["distillation / that"].dropna(), usable[weak_col]
    on_fair = weak.loc[fair.index]
    share = sum(map(math.log, fair)) / sum(map(math.log, on_fair)) if len(fair) and (on_fair < 1).all() else None
    rev = pairs.set_index("selection").T.get("reverse", {})
    return {"kd_fair_where": names(usable.loc[fair.index, "selection"]), "kd_fair_span": span(fair),
            "kd_fair_verdict": NA if not len(fair) else "wins" if (fair < 1).all() else "loses" if (fair > 1).all()
            else "is mixed", "kd_weak_wins": int((weak < 1).sum()), "kd_weak_n": len(usable),
            "kd_weak_span": span(weak), "kd_weak_on_fair": span(on_fair),
            "kd_lr_share": NA if share is None else "less than half" if share > 0.5 else "most",
            "kd_broken": names(broken["selection"]), "kd_broken_alone": ", ".join(map(num, broken["alone"])) or NA,
            "kd_broken_ft": ", ".join(map(num, broken[ft_col])) or NA,
            "kd_broken_kd": ", ".join(map(num, broken["+ distillation"])) or NA,
            "kd_broken_layers": "; ".join(", ".join(map(str, sorted(r["removed"]))) for r in records
                                          if r.get("label") in set(broken["selection"])) or NA,
            "kd_reverse_alone": num(rev.get("alone")), "kd_reverse_ft": num(rev.get(ft_col)),
            "kd_reverse_kd": num(rev.get("+ distillation"))}


#: The second model's comparisons: glue name -> (pipeline, against, verdict words better / worse / tie).
SECOND = {"s_lin": ("sleb+lin", "sleb", ("helps", "hurts", "changes little")),
          "s_lin_kd": ("sleb+lin+kd", "sleb", ("helps", "hurts", "changes little")),
          "s_trsp_lin": ("trsp+lin", "trsp", ("helps", "hurts", "changes little")),
          "s_kd_ft": ("sleb+kd{lr}", "sleb+ft{lr}", ("wins", "loses", "ties")),
          "s_carried": ("sleb+lin+kd", "sleb+ft{lr}", ("wins", "loses", "ties"))}


def second(t, dense: dict | None, lr_label: str) -> dict:
    """The second model: each pipeline against its selection alone, and distillation against fine-tuning, at the
    same learning rate and at the one carried over from the first model (no choice is made here: the settings came
    from the first model); `t` is its `frontier.pipelines_table`, None where the plan has no second model."""
    rows = {} if t is None else t.set_index("pipeline")
    out = {"s_dense": num(dense["ppl_wiki"] if dense else None), "s_carried_lr": NA}
    if t is not None and "sleb+lin+kd" in rows.index:
        out["s_carried_lr"] = lr(rows.loc["sleb+lin+kd", "lr"])
    for key, (a, b, words) in SECOND.items():
        a, b = a.format(lr=lr_label), b.format(lr=lr_label)
        have = t is not None and {a, b} <= set(rows.index)
        x, y = (rows.loc[a, "PPL wiki"], rows.loc[b, "PPL wiki"]) if have else (None, None)
        out.update({f"{key}_ppl": num(x), f"{key}_vs": num(y), f"{key}_ratio": num(have and x / y or None),
                    f"{key}_verdict": compare(x / y, *words) if have else NA})
    return out

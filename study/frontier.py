"""What a practitioner would use instead: the frontier chapter's rows, and its pipelines table (cost, Pareto front).

Every choice (the `lin` ridge and mode, the healing learning rate and KD temperature) is made by the declared
searches (`searches`), on validation perplexity only; test numbers are reported, never used to choose. The
sentences that state the chapter's results are computed in `verdicts`.
"""
from __future__ import annotations

from trsp_lib.compare import compare
from trsp_lib.pipelines import parse

from .searches import edge_check, search


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
        raise ValueError(f"heal_scope needs 'last' and 'lrs', got {heal_scope}; "
                         "e.g. {'last': 3, 'lrs': [3e-4, 1e-3]}")
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
        rows += compare(methods=[sel], finetune_baselines=False, pipelines=[f"{sel}+kd"], lin=lin, heal=kd,
                        **common)[1:]
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


def describe(label: str) -> dict[str, str]:
    """Human names for a row label: selection, weight edit, healing."""
    if label == "dense":
        return {"selection": "none (dense)", "compensation": "-", "healing": "-"}
    p = parse(label)
    return {"selection": p.select.title, "compensation": " + ".join(e.title for e in p.edits) or "none",
            "healing": p.heal.title if p.heal else "none"}

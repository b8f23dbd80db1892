"""The evidence behind the verdict: the main rows over three calibration seeds with 500 zero-shot items each,
built on the choices the declared searches made on validation text (`searches`), and the claims they decide.
"""
from __future__ import annotations

import math

from trsp_lib.compare import compare

from .searches import search, search_heal, search_trsp, trsp_point
from .stats import beyond_spread, paired_bootstrap, seed_spread

#: The frontier chapter's declared searches and pipelines (notebooks/09_instead.ipynb's defaults).
FRONTIER: dict = {
    "selections": "trsp,shortgpt,sleb,angular", "search_selection": "sleb",
    "lin_grid": [{"alpha": 0.0, "sequential": False}, {"alpha": 0.0, "sequential": True},
                 {"alpha": 1e-2, "sequential": True}],
    "heal_grid": [{"lr": 2e-5, "temperature": 1.0}, {"lr": 1e-4, "temperature": 1.0},
                  {"lr": 1e-4, "temperature": 2.0}, {"lr": 3e-4, "temperature": 1.0}],
    "lin_pipelines": "trsp+lin,shortgpt+lin,sleb+lin,angular+lin",
    "healed_pipelines": "sleb+lin+kd,sleb+lin+ft,sleb+kd,shortgpt+kd,trsp:kd",
    "heal_edge": {"lr": 1e-3, "temperature": 1.0},  # one point past heal_grid, checked on validation after the choice
    "heal_scope": {"last": 3, "lrs": [3e-4, 1e-3]},  # distillation of the last 3 layers + head only, lr on validation
}
FRONTIER_LIMIT = 50  # the frontier chapter's zero-shot items per task
SEEDS = (0, 1, 2)
LIMIT = 500  # zero-shot items per task of the main rows: the same seeded items for every row


def choices(model: str = "smollm2-135m", ratio: float = 0.25, machine: dict | None = None,
            frontier_limit: int = FRONTIER_LIMIT, **kw) -> dict:
    """Every choice the main rows use, re-derived from the validation rows (cached after the first run):
    TRSP's tuned settings, each healing control's lr, and the frontier's lin and KD settings."""
    trsp = search_trsp(lambda points: [trsp_point(p, model, ratio, machine, **kw) for p in points])
    read: list[dict] = list(trsp["rows"])  # every row a choice read (the cache-key test checks them all)
    heal = {s: search_heal(s, model, ratio, machine, searched=read, **kw) for s in ("shortgpt", "sleb")}
    common = {"model": model, "ratios": [ratio], "speed": False, "limit": frontier_limit,
              "overrides": {**(machine or {}), "seed": 0, "calib": "wiki"}, **kw}
    f = FRONTIER
    lin = search(f"{f['search_selection']}+lin", f["lin_grid"], "lin", searched=read, **common)[1]
    kd = search(f"{f['search_selection']}+lin+kd", f["heal_grid"], "heal", lin=lin, searched=read, **common)[1]
    return {"tuned": trsp["best"], "trsp_record": trsp["record"], "heal_lr": {s: h[1]["lr"] for s, h in heal.items()},
            "heal_record": [r for h in heal.values() for r in h[0]], "lin": lin, "kd": kd, "rows": read}


def main_calls(tuned: dict, heal_lr: dict[str, float], lin: dict, kd: dict, seed: int, machine: dict | None = None,
               tuned_limit: int | None = None, with_kd: bool = True) -> list[tuple[str, dict]]:
    """The compare calls of one calibration seed, as (suffix of the rows' study label, call kwargs):
    TRSP default and tuned, ShortGPT and SLEB alone and with their tuned fine-tune, SLEB + lin (+ KD).
    `tuned_limit`: the tuned row's zero-shot items (0: perplexity only); `with_kd`: include SLEB + lin + KD."""
    s = {**(machine or {}), "seed": seed}
    calls = [("", {"methods": ["trsp", "shortgpt", "sleb"], "overrides": s}),
             (" (tuned)", {"methods": ["trsp"], "overrides": {**tuned, **s},
                           **({"limit": tuned_limit} if tuned_limit is not None else {})})]
    calls += [("", {"methods": [sel], "overrides": s, "pipelines": [f"{sel}+ft"], "heal": {"lr": heal_lr[sel]}})
              for sel in ("shortgpt", "sleb")]
    calls.append(("", {"methods": ["sleb"], "overrides": s,
                       "pipelines": ["sleb+lin"] + (["sleb+lin+kd"] if with_kd else []), "lin": lin, "heal": kd}))
    return calls


def main_rows(tuned: dict, heal_lr: dict[str, float], lin: dict, kd: dict, seeds: tuple[int, ...] = SEEDS,
              limit: int = LIMIT, model: str = "smollm2-135m", ratio: float = 0.25, machine: dict | None = None,
              tuned_seeds: tuple[int, ...] | None = None, tuned_zs_seeds: tuple[int, ...] | None = None,
              kd_seeds: tuple[int, ...] | None = None, **kw) -> dict[str, list[dict]]:
    """Study label -> its rows, one per seed (dense: one row, it has no calibration). Missing rows are left out.
    `tuned_seeds` / `kd_seeds`: the seeds of the tuned TRSP and the SLEB + lin + KD rows (default: `seeds`);
    `tuned_zs_seeds`: those of the tuned rows that are scored on zero-shot too (the others: perplexity only)."""
    out: dict[str, list[dict]] = {}
    keys: set[str] = set()  # a selection's own row comes back from several calls of its seed: count it once
    for seed in seeds:
        zs = tuned_zs_seeds is None or seed in tuned_zs_seeds
        for suffix, call in main_calls(tuned, heal_lr, lin, kd, seed, machine, None if zs else 0,
                                       with_kd=kd_seeds is None or seed in kd_seeds):
            if suffix and tuned_seeds is not None and seed not in tuned_seeds:
                continue
            rows = compare(model=model, ratios=[ratio], finetune_baselines=False, speed=False,
                           **{"limit": limit, **call}, **kw)
            for r in rows:
                if r["method"] == "dense" and "dense" in out:  # a perplexity-only call's dense row: the same model
                    continue
                if r["key"] not in keys:
                    keys.add(r["key"])
                    out.setdefault(r["method"] + (suffix if r["method"] != "dense" else ""), []).append(r)
    return out


#: The claims the main rows decide: (name of A, its study label, name of B, its label). The paper makes the
#: first two (with LoRA-retrained baselines); the equal-budget controls and the 2026 pipeline are ours.
CLAIMS = [("TRSP", "trsp", "ShortGPT", "shortgpt"), ("TRSP", "trsp", "SLEB", "sleb"),
          ("TRSP tuned", "trsp (tuned)", "SLEB", "sleb"),
          ("TRSP", "trsp", "ShortGPT + fine-tune", "shortgpt+ft"), ("TRSP", "trsp", "SLEB + fine-tune", "sleb+ft"),
          ("TRSP tuned", "trsp (tuned)", "SLEB + fine-tune", "sleb+ft"),
          ("SLEB + lin + KD", "sleb+lin+kd", "TRSP tuned", "trsp (tuned)")]


def _pm(values: list[float], digits: int = 2) -> str:
    if not values:
        return "-"
    s = seed_spread(values)
    return f"{s['mean']:.{digits}f} ± {s['sd']:.{digits}f}" if s["n"] > 1 else f"{s['mean']:.{digits}f}"


def seeds_table(main: dict[str, list[dict]]):
    """One line per study row: perplexities and zero-shot average as mean ± sd over its seeds."""
    import pandas as pd

    return pd.DataFrame([{"method": label, "seeds": len(rows), "PPL wiki": _pm([r["ppl_wiki"] for r in rows]),
                          "PPL news": _pm([r["ppl_news"] for r in rows]),
                          "zero-shot avg": _pm([r["zs_avg"] for r in rows if "zs_avg" in r], 3)}
                         for label, rows in main.items()])


def _says(z: dict, a_name: str, b_name: str) -> str:
    """The zero-shot verdict of a bootstrap result: a tie when its interval holds 0, else the side ahead."""
    return "tie (interval holds 0)" if z["lo"] <= 0 <= z["hi"] else f"{a_name if z['lo'] > 0 else b_name} higher"


def _ci(z: dict) -> str:
    return f"{z['diff']:+.3f} [{z['lo']:+.3f}, {z['hi']:+.3f}]"


def claim_rows(main: dict[str, list[dict]], claims: list[tuple[str, str, str, str]] = CLAIMS) -> list[dict]:
    """Each claim "A beats B", decided twice: perplexity by the seed rule (`beyond_spread`), zero-shot by the
    paired bootstrap over the same items that resamples seeds, then items (beside it the earlier items-only
    interval, so a reader sees which verdicts the seed variance changes). Claims with a missing side are left out.
    Each dict also carries the labels ("a", "b") and the bootstrap result ("zs", with per-task intervals)."""
    out = []
    for a_name, a, b_name, b in claims:
        if a not in main or b not in main:
            continue
        pa, pb = [r["ppl_wiki"] for r in main[a]], [r["ppl_wiki"] for r in main[b]]
        ppl = ("within seed spread" if not beyond_spread(pa, pb) else f"{a_name} lower" if max(pa) < min(pb)
               else f"{b_name} lower")
        items = all(any("zs_items" in r for r in main[x]) for x in (a, b))
        none = {"diff": math.nan, "lo": math.nan, "hi": math.nan, "tasks": {}}
        zs = paired_bootstrap(main[a], main[b]) if items else none
        flat = paired_bootstrap(main[a], main[b], seeds=False) if items else none  # the earlier, items-only interval
        zv = _says(zs, a_name, b_name) if items else "not measured"
        out.append({"a": a, "b": b, "zs": zs, "claim": f"{a_name} beats {b_name}",
                    "PPL wiki (A vs B)": f"{_pm(pa, 1)} vs {_pm(pb, 1)}", "PPL verdict": ppl,
                    "zero-shot A - B [95% CI]": _ci(zs) if items else "-", "zero-shot verdict": zv,
                    "items only [95% CI]": _ci(flat) if items else "-",
                    "items-only verdict": _says(flat, a_name, b_name) if items else "not measured",
                    "holds": "yes" if ppl.startswith(a_name) and not zv.endswith(f"{b_name} higher")
                    else "no" if ppl.startswith(b_name) or zv.startswith(b_name) else "undecided"})
    return out


#: The study labels in the order the figures and tables list them (their names: `style.method_name`).
ORDER = ("dense", "trsp", "trsp (tuned)", "shortgpt", "sleb", "shortgpt+ft", "sleb+ft", "sleb+lin", "sleb+lin+kd")


OTHERS = ("C0", "C1", "C2", "C4", "C5", "C6", "C8", "C9")  # matplotlib's cycle without its red (C3) and grey (C7)


def plot_seeds(main: dict[str, list[dict]], limit: int = LIMIT):
    """The headline figure: per study row, one dot per calibration seed; wiki test perplexity (log) and the
    zero-shot average, with the dense model and the chance level. Returns the figure."""
    import matplotlib.pyplot as plt

    from .style import chance_line, figsize, method_name, plain_log_axis, reference_line, selection

    order = [k for k in ORDER if k in main and k != "dense"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=figsize(0.45), sharey=True)
    for i, label in enumerate(order):
        colour = "tab:red" if selection(label) == "trsp" else OTHERS[i % len(OTHERS)]  # TRSP alone in red
        ax1.scatter([r["ppl_wiki"] for r in main[label]], [i] * len(main[label]), color=colour, zorder=3)
        scored = [r["zs_avg"] for r in main[label] if "zs_avg" in r]  # perplexity-only seeds have no dot here
        ax2.scatter(scored, [i] * len(scored), color=colour, zorder=3)
    reference_line(ax1, main["dense"][0]["ppl_wiki"], "dense", kind="dense", vertical=True)
    reference_line(ax2, main["dense"][0]["zs_avg"], "dense", kind="dense", vertical=True)
    chance_line(ax2, limit=limit, vertical=True)
    plain_log_axis(ax1)
    ax1.set_yticks(range(len(order)), [method_name(k) for k in order])
    ax1.invert_yaxis()
    ax1.set_xlabel("wiki test perplexity (log scale; lower is better)")
    ax2.set_xlabel(f"zero-shot average ({limit} items per task)")
    fig.suptitle("One dot per calibration seed")
    return fig

"""What TRSP's choices do (the ablations chapter): each declared change's test perplexity against the default's
spread over calibration seeds, and TRSP's declared search on validation. Values, tables and figures; the
chapter writes the sentences.

    a = ablations.read(P, ch)        # {"table", "main", "seed_ppl", "band"}
    glue(**ablations.values(P, ch, a), fig_ablations=ablations.figure(a, P))
"""
from __future__ import annotations

from . import plan, runner, searches, stats
from .style import figsize, fmt, label_points, method_name, model_name, plain_log_axis, reference_line

#: The axis of the ablation figure ends here (x the default): a run beyond it is drawn at the edge, value written.
CAP = 8.0
#: Symbols of the ablation names (the chapter's caption defines them).
#: The ablation that reads the paper literally (its collapse is explained where it is shown).
LITERAL = "the paper read literally"
SYMBOLS = {"lambda1": "λ1", "lambda2": "λ2", "l1 norm": "L1 norm"}


def human(name: str) -> str:
    """An ablation's name as the book prints it: 'lambda1 = 0.01' -> 'λ1 = 0.01'."""
    for raw, shown in SYMBOLS.items():
        name = name.replace(raw, shown)
    return name


def read(P, ch: dict) -> dict:
    """The ablation rows as a table (test perplexities, and each over the default's), the verdict's rows by
    label, TRSP's default perplexity over calibration seeds and that spread relative to the seed-0 default."""
    import pandas as pd

    names = {plan.with_setting("trsp", over) if over else "trsp": name for name, over in P.ablations.items()}
    abl = pd.DataFrame([{"ablation": human(names[r["label"]]), "PPL wiki": r["ppl_wiki"], "PPL news": r["ppl_news"],
                         "removed": sorted(r["removed"])} for r in runner.section(P, "ablations", ch)])
    abl = abl.set_index("ablation")
    for domain in ("wiki", "news"):  # > 1: the change hurts; < 1: it helps
        abl[f"{domain} / default"] = abl[f"PPL {domain}"] / abl.loc["default", f"PPL {domain}"]
    main = runner.by_label(runner.section(P, "main", ch))
    seed_ppl = [r["ppl_wiki"] for r in main["trsp"]]
    band = (min(seed_ppl) / abl.loc["default", "PPL wiki"], max(seed_ppl) / abl.loc["default", "PPL wiki"])
    return {"table": abl, "main": main, "seed_ppl": seed_ppl, "band": band}


def describe(point: dict) -> str:
    """A search setting in words: {'lambda1': 0.1, 'stage2_mode': 'sequential'} -> 'λ1 = 0.1, sequential stage 2'."""
    words = {"lambda1": lambda v: f"λ1 = {v:g}", "steps_per_round": lambda v: f"{v} steps per round",
             "stage2_steps": lambda v: f"{v} stage-2 steps", "gate_lr": lambda v: f"gate learning rate {v:g}",
             "stage2_mode": lambda v: f"{v} stage 2", "fade_fraction": lambda v: f"fade over {v:.0%} of stage 2"}
    order = sorted(point, key=lambda k: (list(words).index(k) if k in words else len(words), k))
    return ", ".join(words.get(k, lambda v, k=k: f"{k} = {v}")(point[k]) for k in order) or "default"


def search_table(ch: dict):
    """Every run of TRSP's declared search: the setting in words, its round, validation and test perplexity,
    and the chosen one marked."""
    import pandas as pd

    points = [{}] + [p for ps in searches.KNOBS.values() for p in ps] + searches.JOINT + ch.get("trsp_round2", [])
    words = {searches.name(p): describe(p) for p in points}
    rec = pd.DataFrame(ch["records"]["tuned"]["record"])
    return rec.assign(setting=[words.get(s, s) for s in rec["setting"]])


def heal_table(P, ch: dict):
    """The equal-budget fine-tune controls' learning-rate search: each candidate's rate and perplexities."""
    import pandas as pd

    out = []
    for sel in ("shortgpt", "sleb"):
        for r, x in zip(plan.heal_search(P, sel)[1:], ch["records"][f"heal_lr:{sel}"]):
            out.append({"method": x["pipeline"], "learning rate": r.heal["lr"],
                        **{k: v for k, v in x.items() if k.startswith("PPL")}, "chosen": x["chosen"]})
    return pd.DataFrame(out)


def values(P, ch: dict, a: dict) -> dict:
    """The numbers the chapter glues: the seed band, the changes outside it, the search's winner against the
    default over seeds (`stats.beyond_spread`, the seed rule), the controls' learning rates, identical runs."""
    changes = a["table"].drop(index="default")["wiki / default"]
    literal = a["table"]["removed"].get(LITERAL)
    lo, hi = a["band"]
    outside = changes[(changes < lo) | (changes > hi)].sort_values()
    default, tuned = a["seed_ppl"], [r["ppl_wiki"] for r in a["main"].get("trsp (tuned)", [])]
    d, t = stats.seed_spread(default), stats.seed_spread(tuned or [float("nan")])
    rec = search_table(ch)
    val = dict(zip(rec["setting"], rec["PPL wiki (val)"]))
    chosen = describe(ch["tuned"]) if ch.get("tuned") is not None else "n/a"
    heal = {f"lr_{s}": (ch.get(f"heal_lr:{s}") or {}).get("lr", float("nan")) for s in ("sleb", "shortgpt")}
    return {"n_seeds": len(default), "seed_lo": d["min"], "seed_hi": d["max"], "band_lo": lo, "band_hi": hi,
            "n_changes": len(changes), "n_outside": len(outside), "n_outside_better": int((outside < lo).sum()),
            "outside": ", ".join(f"{k} ({fmt(v)}×)" for k, v in outside.items()) or "none",
            "n_runs": len(rec), "tuned": chosen, "tuned_val": val.get(chosen, float("nan")),
            "default_val": val.get("default", float("nan")), "n_tuned_seeds": len(tuned), "tuned_mean": t["mean"],
            "tuned_sd": t["sd"], "default_mean": d["mean"], "default_sd": d["sd"],
            "search_verdict": ("beyond" if stats.beyond_spread(tuned, default) else "within") if tuned else "n/a",
            "n_identical": int(rec.duplicated(subset=["PPL wiki (val)", "PPL wiki (test)"]).sum()),
            "literal_layers": ", ".join(map(str, literal)) if literal is not None else "n/a",
            "literal_ratio": fmt(a["table"]["wiki / default"].get(LITERAL, float("nan"))),
            "last_layer": a["main"]["dense"][0]["n_layers"] - 1, "model": model_name(P.model), "lr_profile": P.lr(),
            "n_lrs": len(ch["records"]["heal_lr:sleb"]), "seed": P.seed, **heal}


def figure(a: dict, P):
    """Each change's test perplexity over the default's (wiki filled, news open), the default's range over
    seeds shaded, and the dense model and the best baseline as reference lines."""
    import matplotlib.pyplot as plt

    abl, main = a["table"], a["main"]
    fig, ax = plt.subplots(figsize=figsize(0.05 * len(abl) + 0.2), layout="constrained")
    y = list(range(len(abl)))
    ax.axvspan(*a["band"], color="0.88", zorder=0, label=f"default over {len(a['seed_ppl'])} calibration seeds")
    ax.scatter(abl["wiki / default"].clip(upper=CAP), y, marker="o", color="C0", zorder=3, label="wiki (in-domain)")
    ax.scatter(abl["news / default"].clip(upper=CAP), y, marker="s", facecolors="none", edgecolors="C1", zorder=3,
               label="news (out-of-domain)")
    for i, (w, n) in enumerate(zip(abl["wiki / default"], abl["news / default"])):
        if max(w, n) > CAP:
            ax.annotate(f"{fmt(w)}× / {fmt(n)}×", (CAP, i), xytext=(-8, 0), textcoords="offset points", ha="right",
                        va="center", fontsize=9)
    base = abl.loc["default", "PPL wiki"]
    best = min(("sleb", "shortgpt", "sleb+ft", "shortgpt+ft"), key=lambda k: main[k][0]["ppl_wiki"])
    ax.axvline(1.0, color="0.3", ls="--", lw=1.0, zorder=1)  # the default (its own row, and the axis label)
    reference_line(ax, main["dense"][0]["ppl_wiki"] / base, "dense", vertical=True, kind="dense")
    reference_line(ax, main[best][0]["ppl_wiki"] / base, method_name(best), vertical=True)
    plain_log_axis(ax)
    ax.set_xlim(0.2, CAP * 1.1)
    ax.set_yticks(y, abl.index)
    ax.invert_yaxis()
    ax.set_xlabel("test perplexity over the default's (log scale; left of 1 is better)")
    fig.legend(loc="outside lower center", ncol=3)
    return fig


def search_figure(rec):
    """Validation against test perplexity of every search run; the chosen run drawn last (a star) and the
    default marked, so a run with the same numbers cannot hide the chosen one."""
    import matplotlib.pyplot as plt
    import pandas as pd

    fig, ax = plt.subplots(figsize=figsize(0.5), layout="constrained")
    chosen, default = rec[rec["chosen"] == "yes"], rec[rec["setting"] == "default"]
    ax.scatter(rec["PPL wiki (val)"], rec["PPL wiki (test)"], color="C0", zorder=2, label="a run of the search")
    ax.scatter(default["PPL wiki (val)"], default["PPL wiki (test)"], s=70, facecolors="none", edgecolors="k",
               linewidths=1.5, zorder=3, label="default")
    ax.scatter(chosen["PPL wiki (val)"], chosen["PPL wiki (test)"], s=180, marker="*", color="C3", edgecolors="k",
               linewidths=0.6, zorder=4, label="chosen (lowest validation)")
    marked = pd.concat([default.assign(text="default"), chosen.assign(text="chosen")])
    label_points(ax, list(marked["PPL wiki (val)"]), list(marked["PPL wiki (test)"]), list(marked["text"]))
    ax.set_xlabel("wiki validation perplexity (what chooses)")
    ax.set_ylabel("wiki test perplexity (what reports)")
    ax.legend(loc="upper left")
    return fig

"""The study's plan: every row the book reads, declared once, as data (read it like nanoGPT's config files).

`params.Params` holds every parameter of the study; a chapter's parameter cell, `book/params.yaml` and
`python -m study ... --set KEY=VALUE` override its fields, and every row below reads them: the calibration,
evaluation and validation texts reach every row, the searches' included. A `Row` is one cached result: a
study label (one configuration on every page: seed and zero-shot items aside) and what determines it. Rows
that depend on a choice made on validation name the choice ("lin", "kd", "ft", "scope", "tuned",
"heal_lr:sleb"); `runner.choices` makes the choices by the declared searches (`searches`) and `resolve` fills
them in. `SECTIONS` builds each group of rows; `CHAPTERS` says which sections each chapter reads.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from trsp_lib.pipelines import HEAL_DEFAULT, LIN_DEFAULT, parse

from .params import ABLATIONS, Params
from .searches import HEAL_LRS, JOINT, KNOBS, name, setting_name

__all__ = ["ABLATIONS", "CHAPTERS", "Params", "Row", "SECTIONS", "row", "rows"]

@dataclass(frozen=True)
class Row:
    """One result: its study label and everything that determines it (with `Params`' shared texts and profile).

    `kind`: "compare" (a row of `compare`), "speed-row" (the speed of a ratio's shape, beside the comparison),
    "speed" (the speed chapter's protocol) or "scores" (the per-layer criterion scores). `extra`: computed as a
    pipeline row (`compare(pipelines=...)`, scored on the validation texts too) rather than a comparison row."""

    label: str
    pipeline: str
    model: str
    seed: int = 0
    limit: int | None = 50
    ratio: float = 0.25
    overrides: Any = field(default_factory=dict)  # TRSPConfig fields, or the name of a choice ("tuned")
    lin: Any = None                                 # lin settings, or the name of a choice
    heal: Any = None                                # healing settings, or the name of a choice
    extra: bool = False
    criterion_samples: int = 16
    kind: str = "compare"
    section: str = ""

    def waits(self) -> list[str]:
        """The choices this row still needs (their names)."""
        return [v for v in (self.overrides, self.lin, self.heal) if isinstance(v, str)]

    def resolve(self, choices: dict[str, Any]) -> Row:
        """The row with every choice it names filled in from `choices` (left named where not made yet)."""
        def fill(v: Any, default: dict) -> Any:
            v = choices[v] if isinstance(v, str) and choices.get(v) is not None else v
            return {**default, **v} if isinstance(v, dict) else v
        return dataclasses.replace(self, overrides=fill(self.overrides, {}), lin=fill(self.lin, LIN_DEFAULT),
                                   heal=fill(self.heal, HEAL_DEFAULT))

    def configuration(self) -> tuple:
        """What the label must mean on every page: everything but the seed, the zero-shot items, the ratio (a
        sweep's rows share labels across ratios) and the section."""
        skip = {"seed", "limit", "section", "ratio"}
        return tuple((f.name, json.dumps(getattr(self, f.name), sort_keys=True, default=str))
                     for f in dataclasses.fields(self) if f.name not in skip)


def row(P: Params, label: str, pipeline: str, model: str | None = None, **kw: Any) -> Row:
    """A row of `pipeline`; options it has no step to read, and criterion samples it does not use, are dropped
    (they would not change it), so that two rows of one configuration compare equal."""
    kw.setdefault("criterion_samples", P.criterion_samples)
    if pipeline in ("dense", "speed", "scores") or kw.get("kind", "compare") != "compare":
        kw["criterion_samples"] = kw["criterion_samples"] if pipeline == "scores" else 0
    else:
        p = parse(pipeline)
        reads = {s.options for s in p.steps}  # trsp:kd's selection reads the healing options too
        kw["lin"] = kw.get("lin") if "lin" in reads else None
        kw["heal"] = kw.get("heal") if "heal" in reads else None
        kw["criterion_samples"] = kw["criterion_samples"] if p.select.criterion else 0
    kw.setdefault("seed", P.seed)
    kw.setdefault("ratio", P.ratio)
    kw.setdefault("limit", P.limit)
    return Row(label, pipeline, model or P.model, **kw)


def untuned(P: Params, label: str) -> str:
    """`sleb+ft` at the profile's learning rate: 'sleb+ft (lr 2e-5)', apart from the validated `sleb+ft`."""
    return f"{label} (lr {P.lr():.0e})".replace("e-0", "e-")


def with_setting(label: str, point: dict) -> str:
    """A search candidate's label: 'sleb+lin+kd (lr 1e-04, T 2)'; TRSP's: 'trsp (lambda1=0.01)'."""
    return f"{label} ({name(point) if label == 'trsp' else setting_name(point)})"


def comparison(P: Params, model: str, methods: str, finetune: str | None, cs: int, ratio: float, seed: int,
               limit: int | None, section: str) -> list[Row]:
    """A comparison table: dense, each selection, then each + fine-tune at the profile's lr (TRSP trains itself)."""
    names = [m for m in methods.split(",") if m]
    tuned = names if finetune is None else [m for m in finetune.split(",") if m]
    common = {"model": model, "criterion_samples": cs, "ratio": ratio, "seed": seed, "limit": limit,
              "section": section}
    rows = [row(P, "dense", "dense", **{**common, "ratio": P.ratio})]  # the dense model has no ratio
    rows += [row(P, m, m, **common) for m in names]
    rows += [row(P, untuned(P, f"{m}+ft"), f"{m}+ft", **common) for m in names
             if m in tuned and not parse(m).trains]
    return rows


def _comparison(P: Params, ch: dict) -> list[Row]:
    rows = comparison(P, P.model, P.methods, None, P.criterion_samples, P.ratio, P.seed, P.limit, "comparison")
    models = [P.model] + ([P.second_model] if P.second_model else [])
    if P.second_model:
        rows += comparison(P, P.second_model, P.second_methods, P.second_finetune, P.second_criterion_samples,
                           P.ratio, P.seed, P.limit, "comparison")
    return rows + [row(P, "speed", "speed", model=m, kind="speed-row", section="comparison") for m in models
                   if P.speed_row]


def _sweep(P: Params, ch: dict) -> list[Row]:
    return [r for s in P.sweep_seeds for ratio in P.sweep_ratios
            for r in comparison(P, P.model, P.sweep_methods, None, P.criterion_samples, ratio, s, P.limit, "sweep")]


def _importance(P: Params, ch: dict) -> list[Row]:
    rows = comparison(P, P.model, P.methods, "", P.criterion_samples, P.ratio, P.seed, P.limit, "importance")
    return rows + [row(P, "layer scores", "scores", kind="scores", section="importance")]


def trsp_changed(P: Params, ch: dict, overrides: list[dict], section: str) -> list[Row]:
    """TRSP with one change each, perplexity only; a change that is also a point of the TRSP search is that
    search's row (scored on validation too), so one setting has one result on every page."""
    searched = {name(p) for p in ROUND1 + list(ch.get("trsp_round2", []))}
    return [row(P, with_setting("trsp", over), "trsp", overrides=over, limit=0, extra=name(over) in searched,
                section=section) for over in overrides]


def _ablations(P: Params, ch: dict) -> list[Row]:
    """The ablations (the default is the comparison's TRSP row, zero-shot included)."""
    changes = [over for over in P.ablations.values() if over]
    return [row(P, "trsp", "trsp", section="ablations")] + trsp_changed(P, ch, changes, "ablations")


def trsp_search(P: Params, points: list[dict]) -> list[Row]:
    """TRSP search runs: the profile with `point` applied, perplexity only (validation and test)."""
    runs = [row(P, with_setting("trsp", p), "trsp", overrides=p, limit=0, extra=True, section="trsp search")
            for p in points]
    return [row(P, "dense", "dense", limit=0, section="trsp search")] + runs


#: Round 1 of the declared TRSP search: the default, each knob's values, the joint pair.
ROUND1: list[dict] = [{}] + [p for points in KNOBS.values() for p in points] + JOINT


def _trsp_search(P: Params, ch: dict) -> list[Row]:
    """Round 1 of the declared TRSP search; round 2 (greedy) adds the runs `runner.choices` found it needed."""
    return trsp_search(P, ROUND1 + [p for p in ch.get("trsp_round2", []) if p not in ROUND1])


def heal_search(P: Params, selection: str) -> list[Row]:
    """The equal-budget fine-tune control's learning rate: one run per lr, perplexity only (after the selection's own
    row, whose layers every run reuses)."""
    return [row(P, selection, selection, limit=0, section="heal search")] + [
        row(P, with_setting(f"{selection}+ft", {"lr": lr, "temperature": 1.0}), f"{selection}+ft",
            heal={"lr": lr, "temperature": 1.0}, limit=0, extra=True, section="heal search") for lr in HEAL_LRS]


def _heal_search(P: Params, ch: dict) -> list[Row]:
    return [r for sel in ("shortgpt", "sleb") for r in heal_search(P, sel)]


def frontier_search(P: Params, what: str, ch: dict) -> list[Row]:
    """The frontier's declared searches on `search_selection`: "lin", then "ft" and "kd" on the chosen lin,
    "scope" (the last layers only) on the chosen kd; "edge" is the point past the heal grid, read after the choice."""
    s, lin, kd = P.search_selection, "lin", ch.get("kd")
    scope = P.heal_scope or {}
    grids = {"lin": (f"{s}+lin", list(P.lin_grid)), "ft": (f"{s}+lin+ft", [h for h in P.heal_grid
                                                                            if h.get("temperature", 1.0) == 1.0]),
             "kd": (f"{s}+lin+kd", list(P.heal_grid)),
             "scope": (f"{s}+lin+kd", [{**kd, "lr": lr, "last": scope["last"]} for lr in scope.get("lrs", ())]
                       if isinstance(kd, dict) else []),
             "edge": (f"{s}+lin+kd", [P.heal_edge] if P.heal_edge else [])}
    label, grid = grids[what]
    return [row(P, with_setting(label, p), label, lin=p if what == "lin" else lin, heal=None if what == "lin" else p,
                extra=True, section=f"{what} search") for p in grid]


def _frontier_search(P: Params, ch: dict) -> list[Row]:
    return [r for what in ("lin", "ft", "kd", "scope", "edge") for r in frontier_search(P, what, ch)]


def _frontier(P: Params, ch: dict) -> list[Row]:
    """The frontier chapter: every selection alone, + fine-tune, + lin, and the healed pipelines."""
    rows = comparison(P, P.model, P.selections, None, P.criterion_samples, P.ratio, P.seed, P.limit, "frontier")
    rows += [row(P, f"{s}+lin", f"{s}+lin", lin="lin", extra=True, section="frontier")
             for s in P.selections.split(",") if s]
    for label in (x for x in P.healed_pipelines.split(",") if x):
        rows.append(row(P, label, label, lin="lin", heal="kd" if label.endswith("kd") else "ft", extra=True,
                        section="frontier"))
    if P.heal_scope:
        s = P.search_selection
        rows.append(row(P, f"{s}+lin+kd (last {P.heal_scope['last']} + head)", f"{s}+lin+kd", lin="lin",
                        heal="scope", extra=True, section="frontier"))
    return rows


def _kd_beside_ft(P: Params, ch: dict) -> list[Row]:
    """Each selection alone, + fine-tune at the profile's lr, + distillation (chosen kd), and + fine-tune at its
    validated lr where the main rows have one."""
    rows = []
    for s in (x for x in P.kd_selections.split(",") if x):
        rows += comparison(P, P.model, s, None, P.criterion_samples, P.ratio, P.seed, P.limit, "kd beside ft")[1:]
        rows.append(row(P, f"{s}+kd", f"{s}+kd", heal="kd", extra=True, section="kd beside ft"))
        if s in ("shortgpt", "sleb"):
            rows.append(row(P, f"{s}+ft", f"{s}+ft", heal=f"heal_lr:{s}", extra=True, limit=P.main_limit,
                            section="kd beside ft"))
    return rows


def _second(P: Params, ch: dict) -> list[Row]:
    """The main pipelines on the second model with the first model's choices (transferred, not searched again)."""
    if not P.second_model:
        return []
    common = {"model": P.second_model, "criterion_samples": P.second_criterion_samples, "extra": True,
              "section": "second model"}
    rows = comparison(P, P.second_model, P.second_methods, P.second_finetune, P.second_criterion_samples, P.ratio,
                      P.seed, P.limit, "second model")
    rows += [row(P, label, label, lin="lin", heal="kd", **common) for label in P.second_pipelines.split(",") if label]
    rows += [row(P, untuned(P, label), label, lin="lin", heal="kd@profile", **common)
             for label in P.second_at_profile_lr.split(",") if label]
    return rows


def main_rows(P: Params, seed: int) -> list[Row]:
    """The verdict's rows of one calibration seed, on `main_limit` items: TRSP default and tuned, ShortGPT and
    SLEB alone and + fine-tune at their validated lr, SLEB + lin and SLEB + lin + distillation."""
    common = {"seed": seed, "limit": P.main_limit, "section": "main"}
    rows = [row(P, "dense", "dense", **common)] + [row(P, m, m, **common) for m in ("trsp", "shortgpt", "sleb")]
    rows.append(row(P, "trsp (tuned)", "trsp", overrides="tuned", **common))
    rows += [row(P, f"{s}+ft", f"{s}+ft", heal=f"heal_lr:{s}", extra=True, **common) for s in ("shortgpt", "sleb")]
    rows += [row(P, p, p, lin="lin", heal="kd", extra=True, **common) for p in ("sleb+lin", "sleb+lin+kd")]
    return rows


def _main(P: Params, ch: dict) -> list[Row]:
    return [r for s in P.seeds for r in main_rows(P, s) if not (r.label == "dense" and s != P.seeds[0])]


def _paper_ablations(P: Params, ch: dict) -> list[Row]:
    from .paper import ABLATION_CLAIMS
    return trsp_changed(P, ch, [over for _, _, over, _ in ABLATION_CLAIMS], "paper ablations")


def _speed(P: Params, ch: dict) -> list[Row]:
    """The speed chapter's protocol at each ratio, and the comparison's own speed row (the same shape, timed there)."""
    return ([row(P, f"speed {r:g}", "speed", ratio=r, kind="speed", section="speed") for r in P.speed_ratios]
            + [r for r in _comparison(P, ch) if r.kind == "speed-row" and r.model == P.model])


def _trsp(P: Params, ch: dict) -> list[Row]:
    return [r for r in _comparison(P, ch) if r.model == P.model and r.label in ("dense", "trsp")]


#: Every section, in the order `python -m study run` computes them: a search before the rows that use its choice.
SECTIONS: dict[str, Callable[[Params, dict], list[Row]]] = {
    "comparison": _comparison, "trsp": _trsp, "sweep": _sweep, "importance": _importance, "ablations": _ablations,
    "paper ablations": _paper_ablations, "speed": _speed, "trsp search": _trsp_search, "heal search": _heal_search,
    "frontier search": _frontier_search, "main": _main, "frontier": _frontier, "kd beside ft": _kd_beside_ft,
    "second model": _second,
}

#: What each chapter reads. The searches come with every chapter whose rows use their choices.
SEARCHES = ("trsp search", "heal search", "frontier search")
CHAPTERS: dict[str, tuple[str, ...]] = {
    "00": ("comparison", *SEARCHES, "main"),
    "02": ("trsp",),
    "03": ("importance",),
    "04": ("comparison", "sweep"),
    "05": ("ablations", *SEARCHES, "main"),
    "06": ("speed",),
    "07": ("comparison", "paper ablations", *SEARCHES, "main"),
    "09": (*SEARCHES, "frontier", "kd beside ft", "second model"),
}


def rows(P: Params, choices: dict | None = None, chapter: str | None = None) -> list[Row]:
    """Every row of the plan (or of one chapter), each once, with the choices made so far filled in."""
    if chapter is not None and chapter not in CHAPTERS:
        raise ValueError(f"unknown chapter {chapter!r}; chapters with rows: {', '.join(CHAPTERS)}")
    ch = choices or {}
    names = CHAPTERS[chapter] if chapter else list(SECTIONS)
    out, seen = [], set()
    for section in names:
        for r in SECTIONS[section](P, ch):
            r = r.resolve(ch)
            ident = (r.label, r.model, r.seed, r.limit, r.ratio, r.kind) + r.configuration()
            if ident not in seen:
                seen.add(ident)
                out.append(r)
    return out

"""The registry of pruning pipelines: a layer selection, then weight edits, then healing.

A row of the study is a pipeline, named by its steps joined with "+": `sleb` (SLEB's layers deleted), `sleb+ft`
(then plain fine-tuning with TRSP's step budget), `trsp` (TRSP selects and trains), `sleb+lin+kd`. Each step
declares its title, what it needs (calibration data, the dense model, training steps) and whether it trains or
changes weights, so `compare` and `trsp prune --baselines` run any pipeline through `parse`, `select`, `finish`.
Adding a step is one entry: a selection in `SELECTIONS`, an edit in `EDITS`, a healing step in `HEALS`. A row's
key records its steps' settings in full (`Pipeline.key_params`): a new step enters only the keys of the rows using it.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .baselines import criteria
from .results import cached
from .baselines.compensation import compensate, compensate_removed
from .surgery.removal import remove_layers
from .method.trsp import TRSPConfig, config_key, finetune, prune

# what a step may ask for: calibration ids, the dense model, an optimizer-step budget
NEEDS = ("calib", "dense", "steps")


@dataclass
class Job:
    """What a pipeline works on: `model` (a copy of the dense model, pruned in place) and the shared inputs."""

    model: nn.Module
    n: int                          # layers to remove
    cfg: TRSPConfig
    calib: torch.Tensor | None = None
    criterion_samples: int = 16     # calibration rows a criterion sees
    budget: int = 0                 # optimizer steps of a healing step (TRSP's: `method.config.budget`)
    dense: nn.Module | None = None  # the unpruned model, for steps that compare with it
    layers: list[int] = field(default_factory=list)  # what the selection removed (original indices)
    removal_deferred: bool = False  # the selection chose `layers` but left them for an edit (lin) to remove
    options: dict[str, dict] = field(default_factory=dict)  # per `Step.options` name, the step's settings
    store: Path | None = None       # a comparison's folder: selections and stage-1 outcomes are kept beside its rows


@dataclass(frozen=True)
class Step:
    """One step of a pipeline. `run(job)` edits `job.model` in place and returns what the row records."""

    name: str
    run: Callable[[Job], dict[str, Any]]
    doc: str
    title: str = ""                 # how every table and figure names the step ("SLEB", "fine-tune"); "" = `name`
    needs: frozenset[str] = frozenset()
    trains: bool = False            # it runs optimizer steps: it spends the training budget (TRSP, ft, kd)
    changes_weights: bool = False   # a selection that trains or merges: its layers alone do not rebuild its model
    criterion: bool = False         # a selection fed `criterion_samples` calibration rows (recorded in the key)
    key: Callable[[TRSPConfig, dict], Any] | None = None  # (cfg, the step's options) -> its key entry (new steps only)
    options: str | None = None      # which of compare's option dicts the step reads ("lin", "heal")
    configure: Callable[[TRSPConfig, dict], TRSPConfig] | None = None  # how the step's options change the config
    takes_edits: bool = True        # a selection that edits may follow (LaCo's merge: none)
    removes_layers: bool = False    # an edit that deletes the selected layers itself (lin compensates as it removes)
    #: "name:variant" labels: the variant's name -> the fields it changes (trsp:kd is TRSP with a KD stage 2)
    variants: Mapping[str, dict[str, Any]] = field(default_factory=dict, compare=False, hash=False)
    family: str = ""                # the registry name of a variant's step ("trsp" for trsp:kd); "" = `name`

    def __post_init__(self) -> None:
        if not set(self.needs) <= set(NEEDS):
            raise ValueError(f"step {self.name!r} needs {sorted(self.needs)}; a step may need only {NEEDS}")
        if not self.title:
            object.__setattr__(self, "title", self.name)

    def variant(self, name: str) -> Step:
        """This step as `self.name:name` (e.g. trsp:kd); "" is the step itself."""
        if not name:
            return self
        if name not in self.variants:
            raise ValueError(f"step {self.name!r} has no variant {name!r}; "
                             f"choose from {', '.join(self.variants) or 'none'}")
        return replace(self, name=f"{self.name}:{name}", family=self.name, variants={}, **self.variants[name])


def _trsp(job: Job) -> dict[str, Any]:
    """TRSP selects and trains; with a KD stage 2 (trsp:kd) the dense model in the job is the teacher."""
    result = prune(job.model, job.calib, job.cfg, teacher=job.dense, stage1_store=job.store and job.store / "stage1")
    job.layers = result.removed
    return {"final_scales": result.final_scales, "identity_gap": {str(k): v for k, v in result.identity_gap.items()},
            "trajectory": result.trajectory, "timings": result.timings}


def criterion(fn: Callable[..., list[int]], title: str = "", calib: bool = True, edits_weights: bool = False,
              seeded: bool = False) -> Step:
    """A selection step from a criterion `(model, calib, n) -> layers`: it sees the first `criterion_samples`
    calibration rows (`calib=False`: none), and `seeded` ones get the configuration's seed."""
    def run(job: Job) -> dict[str, Any]:
        rows = None if job.calib is None or not calib else job.calib[:job.criterion_samples]
        job.layers = fn(job.model, rows, job.n, **({"seed": job.cfg.seed} if seeded else {}))
        remove_layers(job.model, job.layers)
        return {}
    name = fn.__name__.removesuffix("_layers")
    return Step(name, run, (fn.__doc__ or name).strip().splitlines()[0], title,
                needs=frozenset({"calib"} if calib else ()), changes_weights=edits_weights, criterion=calib)


def _heal(job: Job) -> dict[str, Any]:
    """Fine-tune with TRSP's budget; distil instead when the step was given the dense model (kd)."""
    finetune(job.model, job.calib, job.budget, job.cfg, teacher=job.dense)
    return {}


def _lin(job: Job) -> dict[str, Any]:
    """Selected layers still in place: remove them, compensating each run; already gone (TRSP): compensate."""
    opts = {**LIN_DEFAULT, **job.options.get("lin", {})}
    if job.removal_deferred:
        job.removal_deferred = False
        return {"lin": compensate(job.model, job.layers, job.calib, dense=job.dense, **opts)}
    return {"lin": compensate_removed(job.model, job.layers, job.calib, job.dense, opts["alpha"])}


def _kd_stage2(cfg: TRSPConfig, opts: dict) -> TRSPConfig:
    """trsp:kd: stage 2 distils from the dense model, with the healing options' lr and temperature (every weight)."""
    return replace(_heal_config(cfg, {**opts, "last": 0}), stage2_loss="kd")


def _heal_config(cfg: TRSPConfig, opts: dict) -> TRSPConfig:
    """The healing options of pipeline rows: the KD temperature, and a learning rate (None: the profile's)."""
    opts = {**HEAL_DEFAULT, **opts}
    return replace(cfg, kd_temperature=opts["temperature"], lr=opts["lr"] or cfg.lr, heal_last=opts["last"])


LIN_DEFAULT = {"alpha": 0.0, "sequential": True}
#: The pipeline rows' healing (and trsp:kd): lr None = the profile's; last 0 = every weight trains, k = only the
#: last k layers and the LM head (the key's config records it: `heal_last`).
HEAL_DEFAULT = {"temperature": 1.0, "lr": None, "last": 0}


def _given(job: Job) -> dict[str, Any]:
    raise ValueError("the 'given' selection deletes layers chosen elsewhere: pass them, select(p, job, layers)")


SELECTIONS: dict[str, Step] = {
    "given": Step("given", _given, "layers chosen elsewhere (another run's), deleted as they are", "given layers"),
    "trsp": Step("trsp", _trsp, "TRSP: gates under an l1 penalty pick the layers, stage 2 trains them toward identity",
                 "TRSP", needs=frozenset({"calib", "steps"}), trains=True, changes_weights=True,
                 variants={"kd": {"doc": "TRSP with distillation from the dense model in place of stage 2's LM loss",
                                  "title": "TRSP (KD in stage 2)", "needs": frozenset({"calib", "steps", "dense"}),
                                  "options": "heal", "configure": _kd_stage2}}),
    "shortgpt": criterion(criteria.shortgpt, "ShortGPT"),
    "angular": criterion(criteria.angular, "angular distance"),
    "sleb": criterion(criteria.sleb, "SLEB"),
    "ppl": criterion(criteria.ppl, "PPL (Shortened LLaMA)"),
    "taylor": criterion(criteria.taylor, "Taylor+ (Shortened LLaMA)"),
    "laco": replace(criterion(criteria.laco, "LaCo", edits_weights=True), takes_edits=False),
    "reverse": criterion(criteria.reverse, "reverse order", calib=False),
    "random": criterion(criteria.random_layers, "random", calib=False, seeded=True),
    "magnitude": criterion(criteria.magnitude, "magnitude", calib=False),
}
#: The selections the study compares (`compare(methods="all")`); any other entry is available by name.
STUDY = ("trsp", "shortgpt", "angular", "sleb", "ppl", "taylor", "laco", "reverse", "random")
EDITS: dict[str, Step] = {
    "lin": Step("lin", _lin, "ReplaceMe-style closed-form map per removed run, folded into the layer before it", "lin",
                needs=frozenset({"calib", "dense"}), options="lin", removes_layers=True,
                key=lambda cfg, opts: {**LIN_DEFAULT, **opts}),
}
HEALS: dict[str, Step] = {
    "ft": Step("ft", _heal, "plain LM fine-tuning of every weight with TRSP's optimizer, batches and step budget",
               "fine-tune", needs=frozenset({"calib", "steps"}), trains=True, options="heal", configure=_heal_config),
    "kd": Step("kd", _heal, "distillation from the dense model (KL at a temperature), TRSP's batches and step budget",
               "KD", needs=frozenset({"calib", "steps", "dense"}), trains=True, options="heal", configure=_heal_config,
               key=lambda cfg, opts: {"kind": "kd", "temperature": cfg.kd_temperature}),
}


@dataclass(frozen=True)
class Pipeline:
    label: str
    select: Step
    edits: tuple[Step, ...] = ()
    heal: Step | None = None

    @property
    def base(self) -> str:
        """The label of the selection's own row: the label up to the first "+" (trsp:kd for trsp:kd+lin)."""
        return self.select.name

    @property
    def selection(self) -> str:
        """The selection's registry name (trsp for trsp:kd): what `compare(methods=...)` takes."""
        return self.select.family or self.select.name

    @property
    def trains(self) -> bool:
        """Whether any step runs optimizer steps (TRSP selecting, or a healing step)."""
        return any(s.trains for s in self.steps)

    @property
    def title(self) -> str:
        """The human name every table and figure uses: 'SLEB + lin + KD'."""
        return " + ".join(s.title for s in self.steps)

    @property
    def steps(self) -> tuple[Step, ...]:
        return (self.select, *self.edits, *([self.heal] if self.heal else []))

    def needs(self) -> frozenset[str]:
        return frozenset().union(*(s.needs for s in self.steps))

    def configure(self, cfg: TRSPConfig, options: dict[str, dict]) -> TRSPConfig:
        """The configuration this pipeline runs with: each step's options applied (pipeline rows only)."""
        for step in self.steps:
            if step.configure is not None:
                cfg = step.configure(cfg, options.get(step.options, {}))
        return cfg

    def key_params(self, ratio: float, n: int, cfg: TRSPConfig, criterion_samples: int, budget: int,
                   options: dict[str, dict] | None = None) -> dict:
        """What determines this row besides the shared data and evaluation, every entry always present: "edits"
        maps each edit to the settings its `key` records (a ridge; {} for none), "heal" is the healing step's (a
        KD temperature; {} without a `key`, None without healing). `options`: per step, what its `key` reads."""
        options = options or {}
        heal = self.heal and (self.heal.key(cfg, options.get(self.heal.options, {})) if self.heal.key else {})
        return {"method": self.label, "ratio": ratio, "n": n, "config": config_key(cfg),
                "criterion_samples": criterion_samples if self.select.criterion else None,
                "ft_steps": budget if self.heal else 0,
                "edits": {e.name: e.key(cfg, options.get(e.options, {})) if e.key else {} for e in self.edits},
                "heal": heal}

    def same_model_as(self, other: Pipeline) -> bool:
        """Whether equal removed layers make the two pipelines' models identical (then one row's scores serve both)."""
        plain = not self.select.changes_weights and not other.select.changes_weights
        return plain and [s.name for s in self.steps[1:]] == [s.name for s in other.steps[1:]]


def parse(label: str) -> Pipeline:
    """`sleb+lin+ft` -> Pipeline(select=sleb, edits=(lin,), heal=ft): a selection, edits, and last at most one
    healing step."""
    first, *rest = label.split("+")
    name, _, variant = first.partition(":")
    if name not in SELECTIONS:
        names = [n for s in SELECTIONS.values() for n in (s.name, *(f"{s.name}:{v}" for v in s.variants))]
        raise ValueError(f"pipeline {label!r}: unknown selection {name!r}; choose from {', '.join(names)}")
    select_step = SELECTIONS[name].variant(variant)
    edits, heal = [], None
    for step in rest:
        if heal is not None:
            raise ValueError(f"pipeline {label!r}: healing ({heal.name}) must be the last step")
        if step in EDITS and select_step.takes_edits:
            edits.append(EDITS[step])
        elif step in HEALS:
            heal = HEALS[step]
        else:
            raise ValueError(f"pipeline {label!r}: {step!r} cannot follow; edits: {', '.join(EDITS)} "
                             f"(none after {', '.join(k for k, v in SELECTIONS.items() if not v.takes_edits)}); "
                             f"healing: {', '.join(HEALS)}")
    return Pipeline(label, select_step, tuple(edits), heal)


def select(p: Pipeline, job: Job, layers: list[int] | None = None, once: dict | None = None) -> dict[str, Any]:
    """Run the selection on `job.model` (or take the given `layers` when they rebuild its model). When the
    first edit removes the layers itself (lin), a plain selection leaves them in place for it. `once` (what fixes
    the model and calibration): a selection that leaves the weights alone runs once per `once`, configuration and
    layer count, its record (`job.store/selection/`) serving rows that differ only in what follows or the scoring."""
    if once is not None and job.store is not None and layers is None and not p.select.changes_weights:
        ran: list[dict] = []
        info = cached("selection", {**once, "selection": p.select.name, "n": job.n, "config": config_key(job.cfg),
                                    "criterion_samples": job.criterion_samples if p.select.criterion else None},
                      lambda: ran.append(select(p, job)) or ran[0], root=job.store)
        return ran[0] if ran else {**select(p, job, info["removed"]), **info}
    t0 = time.perf_counter()
    defer = bool(p.edits) and p.edits[0].removes_layers and not p.select.changes_weights
    if layers is not None and not p.select.changes_weights:  # another row's layers: the same model
        job.layers = [int(i) for i in layers]
        extra: dict[str, Any] = {}
        if not defer:
            remove_layers(job.model, job.layers)
    elif defer:  # choose on a scratch copy: the model keeps every layer for the edit
        scratch = replace(job, model=copy.deepcopy(job.model))
        extra = p.select.run(scratch)
        job.layers = scratch.layers
    else:
        extra = p.select.run(job)
    job.removal_deferred = defer
    return {"removed": [int(i) for i in job.layers], "prune_s": time.perf_counter() - t0, **extra}


def finish(p: Pipeline, job: Job) -> tuple[float, dict[str, Any]]:
    """Run the edits and the healing step; returns their seconds and what they record (e.g. lin's fits)."""
    t0 = time.perf_counter()
    info: dict[str, Any] = {}
    for step in p.steps[1:]:
        info.update(step.run(job))
    return time.perf_counter() - t0, info


def title(label: str) -> str:
    """The human name of a row label ('dense' or a pipeline: 'sleb+lin+kd' -> 'SLEB + lin + KD')."""
    return "dense" if label == "dense" else parse(label).title

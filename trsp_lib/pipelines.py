"""The registry of pruning pipelines: a layer selection, then weight edits, then healing.

A row of the study is a pipeline, named by its steps joined with "+": `sleb` (SLEB's layers
deleted), `sleb+ft` (then plain fine-tuning with TRSP's step budget), `trsp` (TRSP selects and
trains), `laco` (a selection that merges weights). Each step declares what it needs (calibration
data, the dense model, training steps) and whether it changes weights, so `compare` and
`trsp prune --baselines` run any pipeline through the same three calls: `parse`, `select`, `finish`.

Adding a step is one entry here: a selection in `SELECTIONS`, an edit in `EDITS`, a healing step in
`HEALS` (see the README, "Add a criterion or a healing step"). The row key of a pipeline gains an
entry only when a new kind of step is present, so adding steps never changes a committed key.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from . import criteria
from .removal import remove_layers
from .trsp import TRSPConfig, config_key, finetune, prune

NEEDS = ("calib", "dense", "steps")  # what a step may ask for: calibration ids, the dense model, an optimizer-step budget


@dataclass
class Job:
    """What a pipeline works on: `model` (a copy of the dense model, pruned in place) and the shared inputs."""

    model: nn.Module
    n: int                          # layers to remove
    cfg: TRSPConfig
    calib: torch.Tensor | None = None
    criterion_samples: int = 16     # calibration rows a criterion sees
    budget: int = 0                 # optimizer steps of a healing step (TRSP's: `trsp.step_budget`)
    dense: nn.Module | None = None  # the unpruned model, for steps that compare with it
    layers: list[int] = field(default_factory=list)  # what the selection removed (original indices)


@dataclass(frozen=True)
class Step:
    """One step of a pipeline. `run(job)` edits `job.model` in place and returns what the row records."""

    name: str
    run: Callable[[Job], dict[str, Any]]
    doc: str
    needs: frozenset[str] = frozenset()
    changes_weights: bool = False   # a selection that trains or merges: its layers alone do not rebuild its model
    criterion: bool = False         # a selection fed `criterion_samples` calibration rows (recorded in the key)
    key: Callable[[TRSPConfig, dict], Any] | None = None  # (cfg, the step's options) -> its key entry (new steps only)

    def __post_init__(self) -> None:
        if not set(self.needs) <= set(NEEDS):
            raise ValueError(f"step {self.name!r} needs {sorted(self.needs)}; a step may need only {NEEDS}")


def _trsp(job: Job) -> dict[str, Any]:
    result = prune(job.model, job.calib, job.cfg)
    job.layers = result.removed
    return {"final_scales": result.final_scales, "identity_gap": {str(k): v for k, v in result.identity_gap.items()},
            "trajectory": result.trajectory, "timings": result.timings}


def criterion(fn: Callable[..., list[int]], calib: bool = True, edits_weights: bool = False, seeded: bool = False) -> Step:
    """A selection step from a criterion `(model, calib, n) -> layers`: it sees the first `criterion_samples`
    calibration rows (`calib=False`: none), and `seeded` ones get the configuration's seed."""
    def run(job: Job) -> dict[str, Any]:
        rows = None if job.calib is None or not calib else job.calib[:job.criterion_samples]
        job.layers = fn(job.model, rows, job.n, **({"seed": job.cfg.seed} if seeded else {}))
        remove_layers(job.model, job.layers)
        return {}
    name = fn.__name__.removesuffix("_layers")
    return Step(name, run, (fn.__doc__ or name).strip().splitlines()[0], needs=frozenset({"calib"} if calib else ()),
                changes_weights=edits_weights, criterion=calib)


def _ft(job: Job) -> dict[str, Any]:
    finetune(job.model, job.calib, job.budget, job.cfg)
    return {}


def _given(job: Job) -> dict[str, Any]:
    raise ValueError("the 'given' selection deletes layers chosen elsewhere: pass them, select(p, job, layers)")


SELECTIONS: dict[str, Step] = {
    "given": Step("given", _given, "layers chosen elsewhere (another run's), deleted as they are"),
    "trsp": Step("trsp", _trsp, "TRSP: gates under an l1 penalty pick the layers, stage 2 trains them toward identity",
                 needs=frozenset({"calib", "steps"}), changes_weights=True),
    "shortgpt": criterion(criteria.shortgpt),
    "angular": criterion(criteria.angular),
    "sleb": criterion(criteria.sleb),
    "ppl": criterion(criteria.ppl),
    "taylor": criterion(criteria.taylor),
    "laco": criterion(criteria.laco, edits_weights=True),
    "reverse": criterion(criteria.reverse, calib=False),
    "random": criterion(criteria.random_layers, calib=False, seeded=True),
    "magnitude": criterion(criteria.magnitude, calib=False),
}
#: The selections the study compares (`compare(methods="all")`); any other entry is available by name.
STUDY = ("trsp", "shortgpt", "angular", "sleb", "ppl", "taylor", "laco", "reverse", "random")
EDITS: dict[str, Step] = {}
HEALS: dict[str, Step] = {
    "ft": Step("ft", _ft, "plain LM fine-tuning of every weight with TRSP's optimizer, batches and step budget",
               needs=frozenset({"calib", "steps"})),
}


@dataclass(frozen=True)
class Pipeline:
    label: str
    select: Step
    edits: tuple[Step, ...] = ()
    heal: Step | None = None

    @property
    def base(self) -> str:
        """The selection's registry name: the label up to the first "+" (its own row's label)."""
        return self.label.split("+")[0]

    @property
    def steps(self) -> tuple[Step, ...]:
        return (self.select, *self.edits, *([self.heal] if self.heal else []))

    def needs(self) -> frozenset[str]:
        return frozenset().union(*(s.needs for s in self.steps))

    def trains(self) -> bool:
        return self.heal is not None

    def key_params(self, ratio: float, n: int, cfg: TRSPConfig, criterion_samples: int, budget: int,
                   options: dict[str, dict] | None = None) -> dict:
        """What determines this row besides the shared data and evaluation (today's keys, exactly, for
        today's steps; an edit or a new healing step adds its own entry only when present).
        `options`: per step name, the settings its `key` records (e.g. a ridge, a temperature)."""
        options = options or {}
        params = {"method": self.label, "ratio": ratio, "n": n, "config": config_key(cfg),
                  "criterion_samples": criterion_samples if self.select.criterion else None,
                  "ft_steps": budget if self.heal else 0}
        if self.edits:
            params["edits"] = {e.name: e.key(cfg, options.get(e.name, {})) if e.key else {} for e in self.edits}
        if self.heal and self.heal.key:
            params["heal"] = self.heal.key(cfg, options.get(self.heal.name, {}))
        return params

    def same_model_as(self, other: Pipeline) -> bool:
        """Whether equal removed layers make the two pipelines' models identical (then one row's scores serve both)."""
        plain = not self.select.changes_weights and not other.select.changes_weights
        return plain and [s.name for s in self.steps[1:]] == [s.name for s in other.steps[1:]]


def parse(label: str) -> Pipeline:
    """`sleb+ft` -> Pipeline(select=sleb, heal=ft): a selection, then edits, then at most one healing step, last."""
    name, *rest = label.split("+")
    if name not in SELECTIONS:
        raise ValueError(f"unknown selection {name!r} in {label!r}; choose from {', '.join(SELECTIONS)}")
    edits, heal = [], None
    for step in rest:
        if heal is not None:
            raise ValueError(f"{label!r}: healing ({heal.name}) must be the last step")
        if step in EDITS:
            edits.append(EDITS[step])
        elif step in HEALS:
            heal = HEALS[step]
        else:
            raise ValueError(f"unknown step {step!r} in {label!r}; edits: {', '.join(EDITS) or 'none'}; "
                             f"healing: {', '.join(HEALS)}")
    return Pipeline(label, SELECTIONS[name], tuple(edits), heal)


def select(p: Pipeline, job: Job, layers: list[int] | None = None) -> dict[str, Any]:
    """Run the selection on `job.model` (or delete the given `layers` when they rebuild its model)."""
    t0 = time.perf_counter()
    if layers is not None and not p.select.changes_weights:
        job.layers = [int(i) for i in layers]
        remove_layers(job.model, job.layers)
        extra = {}
    else:
        extra = p.select.run(job)
    return {"removed": [int(i) for i in job.layers], "prune_s": time.perf_counter() - t0, **extra}


def finish(p: Pipeline, job: Job) -> float:
    """Run the edits and the healing step; returns their seconds."""
    t0 = time.perf_counter()
    for step in p.steps[1:]:
        step.run(job)
    return time.perf_counter() - t0

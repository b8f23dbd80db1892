"""The study's parameters: every value a rerun may change, with the default CPU book's values (`Params`), and the
ablations chapter's declared changes (`ABLATIONS`). A chapter's parameter cell, `book/params.yaml` and
`python -m study ... --set KEY=VALUE` set them; `plan` turns them into rows.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from trsp_lib.pipelines import STUDY
from trsp_lib.profiles import load


@dataclass(frozen=True)
class Params:
    """Every parameter of the study, with the default CPU book's values."""

    model: str = "smollm2-135m"
    ratio: float = 0.25
    profile: str = "default"                 # a named set of TRSPConfig and evaluation fields (trsp_lib.profiles)
    device: str = "cpu"
    overrides: dict = field(default_factory=dict)  # TRSPConfig fields applied to every row (e.g. {"n_samples": 32})
    seed: int = 0                            # the calibration seed of the one-seed rows and of every search
    seeds: tuple[int, ...] = (0, 1, 2)       # the main rows' calibration seeds
    limit: int | None = 50                   # zero-shot items per task of the one-seed rows (None: full sets)
    main_limit: int | None = 500             # ... of the main rows (the same seeded items for every row)
    calib: str = "wiki"                      # calibration text: wiki, news (built in), a file, wikitext2-train (hub)
    eval_texts: dict = field(default_factory=lambda: {"wiki": "wiki", "news": "news"})  # column -> test text
    val_texts: dict = field(default_factory=lambda: {"wiki_val": "wiki_val", "news_val": "news_val"})  # the first
    # decides every search: column -> validation text
    criterion_samples: int = 16              # calibration sequences the baseline criteria see
    methods: str = ",".join(STUDY)           # the comparison chapter's selections, each also + fine-tune
    second_model: str | None = "gemma3-270m"  # None: one model
    second_methods: str = "trsp,shortgpt,sleb,reverse"
    second_finetune: str = "shortgpt,sleb"
    second_criterion_samples: int = 8        # SLEB re-scores every layer each step: 8 keeps Gemma under ~20 min
    sweep_ratios: tuple[float, ...] = (0.125, 0.25, 0.375, 0.5)
    sweep_methods: str = "trsp,shortgpt"
    sweep_seeds: tuple[int, ...] = (0,)
    ablations: dict = field(default_factory=lambda: dict(ABLATIONS))  # name -> TRSPConfig overrides
    selections: str = "trsp,shortgpt,sleb,angular"  # the frontier's plain rows, each also + lin
    search_selection: str = "sleb"           # the frontier's searches run on this selection's layers
    lin_grid: tuple = ({"alpha": 0.0, "sequential": False}, {"alpha": 0.0, "sequential": True},
                       {"alpha": 1e-2, "sequential": True})
    heal_grid: tuple = ({"lr": 2e-5, "temperature": 1.0}, {"lr": 1e-4, "temperature": 1.0},
                        {"lr": 1e-4, "temperature": 2.0}, {"lr": 3e-4, "temperature": 1.0})
    healed_pipelines: str = "sleb+lin+kd,sleb+lin+ft,sleb+kd,shortgpt+kd,trsp:kd"
    heal_edge: dict | None = field(default_factory=lambda: {"lr": 1e-3, "temperature": 1.0})  # one point past the
    # grid, read on validation after the choice
    heal_scope: dict | None = field(default_factory=lambda: {"last": 3, "lrs": (3e-4, 1e-3)})  # distillation of
    # the last layers + head only (Lu et al.), its lr searched
    kd_selections: str = "shortgpt,sleb,angular,ppl,taylor,laco,reverse,random"  # alone, + fine-tune, + distillation
    second_pipelines: str = "sleb+lin,sleb+lin+kd,trsp+lin"  # on the second model, with the first model's choices
    second_at_profile_lr: str = "sleb+kd"    # ... also at the profile's lr: the loss apart from the transferred lr
    speed_row: bool = True                   # time the comparison's shape too (a minute of generation, even tiny)
    speed_ratios: tuple[float, ...] = (0.125, 0.25, 0.375, 0.5)
    speed: dict = field(default_factory=lambda: {"prefill_len": 256, "gen_batch": 4, "prompt_len": 64,
                                                 "new_tokens": 32, "reps": 5})

    def __post_init__(self) -> None:
        if self.heal_scope and not {"last", "lrs"} <= set(self.heal_scope):
            raise ValueError(f"heal_scope needs 'last' and 'lrs', got {self.heal_scope}; "
                             "e.g. {'last': 3, 'lrs': [3e-4, 1e-3]}, or None to skip it")

    @classmethod
    def of(cls, *, model: str | None = None, ratio: float | None = None, calib: str | None = None,
           eval_texts: dict | None = None, val_texts: dict | None = None, **values: Any) -> Params:
        """Params with `values` set (the named ones where not None: a chapter's parameter cell leaves them None to
        mean the default); a name that is no field is a one-line error naming the fields."""
        named = {"model": model, "ratio": ratio, "calib": calib, "eval_texts": eval_texts, "val_texts": val_texts}
        values = {**{k: v for k, v in named.items() if v is not None}, **values}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown study parameter(s) {unknown}; known: {', '.join(sorted(known))}")
        tuples = {k: tuple(v) for k, v in values.items() if isinstance(v, list)}  # papermill and YAML give lists
        return cls(**{**values, **tuples})

    def set(self, assignments: list[str]) -> Params:
        """`["calib=news", "seeds=[0, 1]"]` applied (values read as JSON, else as text)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for a in assignments:
            key, eq, text = a.partition("=")
            if not eq:
                raise ValueError(f"--set takes KEY=VALUE, got {a!r}; e.g. --set calib=news")
            try:
                values[key] = json.loads(text)
            except json.JSONDecodeError:
                values[key] = text
        return Params.of(**values)

    def lr(self) -> float:
        """The profile's learning rate: the + fine-tune rows' when no search chose one."""
        return load(self.profile)[0].lr


#: The ablations chapter's runs: a name -> TRSPConfig overrides applied to the profile (one seed, perplexity only).
ABLATIONS: dict[str, dict] = {
    "default": {},
    "one-shot selection (w/o W)": {"one_shot": True},
    "no stage 2 (w/o R)": {"stage2_steps": 0},
    "stage-2 penalty off (lambda2 = 0)": {"lambda2": 0.0},
    "lambda2 = 0.01": {"lambda2": 0.01},
    "l1 norm in stage 2": {"norm": "l1"},
    "sequential stage 2": {"stage2_mode": "sequential"},
    "no fade (penalty only)": {"stage2_fade": False},
    "stage 1 trains all weights": {"stage1_train": "all"},
    "kept gates dropped, not folded": {"fold_scales": False},
    "lambda1 = 0.01": {"lambda1": 0.01},
    "lambda1 = 0.2": {"lambda1": 0.2},
    "16 calibration sequences": {"n_samples": 16},
    "calibrated on news": {"calib": "news"},
    "paper's output gate": {"gate": "output", "stage2_fade": False},
    "the paper read literally": {"gate": "output", "protect_last": 0, "lambda1": 5e-3, "stage1_train": "all",
                                 "gate_lr": 2e-5, "stage2_penalty": "ungated", "stage2_fade": False},
}

"""`TRSPConfig`: every choice of a TRSP run that the paper leaves open, and how a result's key records it.

`profiles.load` fills one from a named profile; `config_key` is what enters every cache key (every field).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from ..surgery.gating import GATE_MODES
from .losses import NORMS, PENALTIES


@dataclass
class TRSPConfig:
    """One TRSP run.  Defaults are the measured CPU default for small pre-norm models (see the book)."""

    # what to remove
    ratio: float = 0.25              # fraction of decoder layers to remove: n = round(ratio * L)
    n_remove: int | None = None      # overrides ratio when set
    protect_first: int = 0           # never select the first k layers
    protect_last: int = 1            # never select the last k layers (the last layer's output scale is invisible
                                     # to a pre-norm LM head)
    # calibration data
    calib: str = "wiki"              # built-in calibration text ("wiki", "news") or a text file
    n_samples: int = 64              # calibration sequences
    seq_len: int = 256               # tokens per sequence
    batch_size: int = 1              # sequences per micro-batch (1 x 4 keeps SmolLM2 under 4 GB on CPU)
    grad_accum: int = 4              # micro-batches per optimizer step
    seed: int = 0
    # gates
    gate: str = "branch"             # "output" (paper: s * (h + F(h))) or "branch" (h + s * F(h))
    # stage 1
    lambda1: float = 0.05            # paper: 5e-3 (LLaMA-2-7B)
    steps_per_round: int = 4         # optimizer steps between two selections
    one_shot: bool = False           # ablation "w/o W": train n*steps_per_round steps, then select all n at once
    stage1_train: str = "gates"      # "gates": only the scales train; "all": scales and weights (released code)
    gate_lr: float = 1e-2            # learning rate of the scales (constant)
    gate_optimizer: str = "adam"     # "adam" or "sgd" for the scales
    lr: float = 2e-5                 # learning rate of the weights (paper: 2e-5, AdamW, 3% warm-up, linear decay)
    warmup: float = 0.03
    weight_decay: float = 0.0
    # stage 2
    lambda2: float = 1e-3            # paper: 1e-3
    norm: str = "l2"                 # "l2" (paper default) or "l1": per-token norm of X_out - X_in, mean over tokens
    stage2_steps: int = 16           # optimizer steps in stage 2 (in total, also for "sequential")
    stage2_mode: str = "joint"       # "joint": all of P at once (paper); "sequential": one layer at a time
                                     # (released code)
    stage2_penalty: str = "gated"    # branch gate: "gated" penalises s*F(h), "ungated" F(h); output gate: always
                                     # X_out - X_in before s
    stage2_fade: bool = True         # branch gate only: anneal the selected layers' s linearly to 0 in stage 2
    fade_fraction: float = 0.5       # ... over this fraction of the stage-2 steps; the rest trains with them at 0
    lambda2_warmup: float = 0.0      # fraction of stage 2 over which lambda2 ramps up from 0
    stage2_train: str = "all"        # "all" weights, or "kept": the selected layers' weights stay frozen
    stage2_loss: str = "lm"          # "lm" (paper) or "kd": KL(dense || pruned) in place of the LM loss (healing too)
    kd_temperature: float = 1.0      # temperature of the "kd" loss (and of +kd healing rows)
    heal_last: int = 0               # +ft / +kd rows: 0 trains every weight; k trains only the last k layers and
                                     # the head
    # the end
    fold_scales: bool = True         # fold kept layers' scales into their weights (exact), or drop them
    # machine
    device: str = "cpu"              # "cuda", "cuda:1", or "auto": spread over every visible GPU
                                     # (accelerate device_map)
    autocast: str = "auto"           # "auto": bf16 autocast on CUDA, none on CPU; "bf16"; "none"

    def validate(self, n_layers: int) -> int:
        """Check the configuration against a model with `n_layers`; return n to remove."""
        self._check_values()
        n = self.n_remove
        if n is None:
            if not 0.0 < self.ratio < 1.0:
                raise ValueError(f"ratio must be in (0, 1), got {self.ratio}")
            n = layers_to_remove(self.ratio, n_layers)
            if n < 1:
                raise ValueError(f"ratio {self.ratio} of {n_layers} layers removes nothing; use a larger ratio")
        pool = n_layers - self.protect_first - self.protect_last
        if self.protect_first < 0 or self.protect_last < 0:
            raise ValueError("protect_first and protect_last must be >= 0")
        if not 1 <= n < n_layers:
            raise ValueError(f"cannot remove {n} of {n_layers} layers: need 1 <= n < {n_layers}")
        if n > pool:
            raise ValueError(f"cannot remove {n} layers: only {pool} candidates after protecting the first "
                             f"{self.protect_first} and last {self.protect_last}; "
                             "lower protect_first/protect_last or the ratio")
        return n

    def _check_values(self) -> None:
        """The fields that do not depend on the model: choices, sizes and the fade."""
        choices = {"gate": GATE_MODES, "norm": NORMS, "stage1_train": ("gates", "all"),
                   "gate_optimizer": ("adam", "sgd"), "stage2_mode": ("joint", "sequential"),
                   "stage2_penalty": PENALTIES, "stage2_train": ("all", "kept"), "stage2_loss": ("lm", "kd"),
                   "autocast": ("auto", "bf16", "none")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("n_samples", "seq_len", "batch_size", "grad_accum", "steps_per_round"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.stage2_steps < 0:
            raise ValueError("stage2_steps must be >= 0")
        if self.heal_last < 0:
            raise ValueError(f"heal_last must be >= 0 (0: every weight heals), got {self.heal_last}")
        if not 0.0 < self.fade_fraction <= 1.0:
            raise ValueError(f"fade_fraction must be in (0, 1], got {self.fade_fraction}")
        if self.stage2_fade and self.gate != "branch":
            raise ValueError("stage2_fade needs gate='branch' (fading an output gate to 0 zeroes the residual stream)")

    @classmethod
    def from_dict(cls, d: dict) -> "TRSPConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown TRSP parameter(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)


def layers_to_remove(ratio: float, n_layers: int) -> int:
    """round(ratio * L) with halves rounded up (Python's round() would send 0.5 to even)."""
    return math.floor(ratio * n_layers + 0.5)


def config_key(cfg: TRSPConfig) -> dict:
    """The configuration as a result's key records it: every field (a field added later enters every key, and
    the stored records are rewritten: `provenance.KEY_SCHEMA`).

    One deliberate normalisation, a statement about arithmetic rather than a legacy exception: a float32 run
    without autocast keys as the CPU default ("cpu", "auto") on any device, so a row computed on a GPU in
    float32 serves the CPU book (its provenance names the machine)."""
    defaults = {f.name: f.default for f in fields(cfg)}
    key = asdict(cfg)
    if cfg.autocast == "none" or (cfg.autocast == "auto" and not str(cfg.device).startswith(("cuda", "auto"))):
        key.update(device=defaults["device"], autocast=defaults["autocast"])
    return key


@dataclass(frozen=True)
class Budget:
    """What a TRSP run removing n layers trains on (stage 1 + stage 2): the equal-budget healing rows get the same."""

    steps: int   # optimizer steps
    tokens: int  # tokens trained on: steps x batch_size x grad_accum x seq_len


def budget(cfg: TRSPConfig, n: int) -> Budget:
    """The optimizer steps (n rounds x steps per round + stage-2 steps) and tokens of a TRSP run removing n layers."""
    steps = n * cfg.steps_per_round + cfg.stage2_steps
    return Budget(steps, steps * cfg.batch_size * cfg.grad_accum * cfg.seq_len)

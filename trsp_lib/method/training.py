"""Optimizer steps on calibration batches: the trainer both TRSP stages and the healing steps share.

One seeded batch stream, AdamW on the weights (warm-up then linear decay) and a separate optimizer
for the gates, bf16 autocast on CUDA, and a trajectory row per step. `finetune` is the
equal-budget control (the `ft` healing step): the same trainer with no regularizer.
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterator

import torch
from torch import nn
from tqdm import tqdm

from ..surgery.adapters import get_layers
from .config import TRSPConfig
from ..surgery.devices import input_device, on_cuda
from ..surgery import distributed
from ..log import progress
from ..surgery.gating import Gating, attach_gates, detach_gates
from .losses import kd_loss


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def batch_stream(calib: torch.Tensor, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    """Endless micro-batches: a seeded permutation of the calibration rows, reshuffled each pass."""
    g = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(calib.shape[0], generator=g)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            yield calib[order[start:start + batch_size]]
        if len(order) < batch_size:
            raise ValueError(f"batch_size {batch_size} exceeds the {len(order)} calibration samples")


def autocast(cfg: TRSPConfig):
    cuda = on_cuda(cfg.device)
    if cfg.autocast == "bf16" or (cfg.autocast == "auto" and cuda):
        return torch.autocast("cuda" if cuda else "cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def optimizers(model: nn.Module, gating: Gating, cfg: TRSPConfig, train_weights: Callable[[str], bool], steps: int):
    """AdamW on the weights that train (warm-up then linear decay), and the gates at a constant lr."""
    weights = []
    for name, p in model.named_parameters():
        if p is gating.scales:
            continue
        p.requires_grad_(train_weights(name))
        if p.requires_grad:
            weights.append(p)
    gate_opt = (torch.optim.SGD([gating.scales], lr=cfg.gate_lr) if cfg.gate_optimizer == "sgd"
                else torch.optim.AdamW([gating.scales], lr=cfg.gate_lr, weight_decay=0.0))
    # foreach=False: the fused multi-tensor update allocates a temporary copy of all the weights,
    # which on a 2-core laptop is the difference between fitting in 4 GB and not.
    weight_opt = (torch.optim.AdamW(weights, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=False)
                  if weights else None)
    warm = max(1, math.ceil(cfg.warmup * steps))

    def schedule(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (steps - step) / max(1, steps - warm))

    sched = torch.optim.lr_scheduler.LambdaLR(weight_opt, schedule) if weight_opt else None
    return gate_opt, weight_opt, sched


def layer_index(name: str) -> int | None:
    """Index of the decoder layer a parameter belongs to (wrapped layers: '...layers.<i>.layer...')."""
    parts = name.split(".")
    for a, b in zip(parts, parts[1:]):
        if a in ("layers", "h", "layer") and b.isdigit():
            return int(b)
    return None


def lm_objective(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The paper's task loss: next-token cross-entropy on the calibration batch."""
    return model(input_ids=x, labels=x).loss


def kd_objective(teacher: nn.Module, temperature: float) -> Callable[[nn.Module, torch.Tensor], torch.Tensor]:
    """Distillation from `teacher` (the dense model, frozen) on the same calibration batch."""
    teacher.eval()

    def objective(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        logits = model(input_ids=x).logits
        with torch.no_grad():
            target = teacher(input_ids=x.to(input_device(teacher))).logits
        return kd_loss(logits, target.to(logits.device), temperature)
    return objective


class Trainer:
    """Runs optimizer steps and records the trajectory; shared by both stages."""

    def __init__(self, model: nn.Module, gating: Gating, calib: torch.Tensor, cfg: TRSPConfig):
        distributed.check_batch(cfg.batch_size)
        self.model, self.gating, self.cfg = distributed.shard(model, keep=(gating, gating.scales)), gating, cfg
        self.batches = batch_stream(calib, cfg.batch_size, cfg.seed)
        self.trajectory: list[dict] = []
        self.step = 0
        self.objective: Callable[[nn.Module, torch.Tensor], torch.Tensor] = lm_objective

    def run(self, stage: int, steps: int, gate_opt, weight_opt, sched, regularizer: Callable[[int], torch.Tensor],
            before_step: Callable[[int], None] | None = None, round_: int | None = None, bar: tqdm | None = None,
            frozen_gates: list[int] | None = None) -> None:
        model, cfg = self.model, self.cfg
        device = input_device(model)
        for k in range(steps):
            if before_step is not None:
                before_step(k)
            gate_opt.zero_grad(set_to_none=True)
            if weight_opt:
                weight_opt.zero_grad(set_to_none=True)
            lm_sum = reg_sum = 0.0
            for _ in range(cfg.grad_accum):
                x = distributed.local_rows(next(self.batches)).to(device)
                with autocast(cfg):
                    lm = self.objective(model, x)
                reg = regularizer(k)
                total = lm.float() + reg.to(lm.device)  # the loss sits on the last GPU of a device_map
                if not torch.isfinite(total):
                    raise TrainingDiverged(
                        f"stage {stage} step {self.step}: loss is {total.item()} "
                        f"(LM {lm.item():.4g}, reg {float(reg.detach()):.4g}); "
                        "lower --lr / --gate-lr, --lambda1 / --lambda2, or run in float32")
                (total / cfg.grad_accum).backward()
                self.gating.forget()
                lm_sum += lm.item() / cfg.grad_accum
                reg_sum += float(reg.detach()) / cfg.grad_accum
            distributed.reduce_grads(self.gating.scales)
            lm_sum, reg_sum = distributed.mean(lm_sum, reg_sum)
            if frozen_gates and self.gating.scales.grad is not None:
                self.gating.scales.grad[frozen_gates] = 0.0  # set by a schedule, not learned (Adam then leaves them)
            gate_opt.step()
            if weight_opt:
                weight_opt.step()
                sched.step()
            self.trajectory.append({
                "stage": stage, "round": round_, "step": self.step, "lm": lm_sum, "reg": reg_sum,
                "loss": lm_sum + reg_sum, "scales": self.gating.scales.detach().float().cpu().tolist(),
            })
            self.step += 1
            if bar is not None:
                bar.set_postfix(lm=f"{lm_sum:.3f}", reg=f"{reg_sum:.3g}")
                bar.update(1)


def finetune(model: nn.Module, calib: torch.Tensor, steps: int, cfg: TRSPConfig | None = None,
             teacher: nn.Module | None = None) -> list[dict]:
    """Plain LM fine-tuning of all weights with TRSP's optimizer and batches: the equal-budget control.

    It runs through the same trainer as TRSP (gates attached at 1 and frozen, no regularizer), so
    "baseline + fine-tune" differs from TRSP only in what is regularized and selected. With a
    `teacher` (the dense model) it distils instead: KL(teacher || model) at `cfg.kd_temperature`
    on the same batches and steps (the "+kd" rows).
    """
    cfg = cfg or TRSPConfig()
    if steps < 1:
        return []
    torch.manual_seed(cfg.seed)
    was_training = model.training
    model.train()
    gating = attach_gates(model, "branch")
    gating.scales.requires_grad_(False)
    trains = heal_scope(model, cfg.heal_last)
    trainer = Trainer(model, gating, calib, cfg)
    if teacher is not None:
        trainer.objective = kd_objective(teacher, cfg.kd_temperature)
    try:
        gate_opt, weight_opt, sched = optimizers(trainer.model, gating, cfg, trains, steps)
        zero = torch.zeros(())
        with progress(total=steps, desc="distil" if teacher is not None else "fine-tune") as bar:
            trainer.run(0, steps, gate_opt, weight_opt, sched, regularizer=lambda k: zero, bar=bar)
        distributed.gather_into(trainer.model, model)
    finally:
        gating.scales.requires_grad_(True)
        detach_gates(model, gating, fold=False)
        model.train(was_training)
        for p in model.parameters():
            p.requires_grad_(True)
    return trainer.trajectory


def heal_scope(model: nn.Module, last: int) -> Callable[[str], bool]:
    """Which weights a healing run trains, by parameter name: every one (`last` 0), or only the last `last`
    decoder layers, the final norm and the LM head (the cheap scope of Lu et al., "Reassessing Layer
    Pruning", ICLR 2026). A tied LM head is the input embedding: it trains then too."""
    if last <= 0:
        return lambda name: True
    layers = get_layers(model)
    if last > len(layers):
        raise ValueError(f"heal_last {last} exceeds the model's {len(layers)} layers; use 0 to heal every weight")
    in_layers = {id(p) for layer in layers for p in layer.parameters()}
    keep = {id(p) for layer in layers[-last:] for p in layer.parameters()}
    keep |= {id(p) for p in model.get_output_embeddings().parameters()}
    embed = {id(p) for p in model.get_input_embeddings().parameters()} - keep
    names = {n for n, p in model.named_parameters() if id(p) in keep or (id(p) not in in_layers and id(p) not in embed)}
    return names.__contains__  # FSDP2's training copy keeps the parameter names

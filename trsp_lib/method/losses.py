"""The two regularizers of TRSP and the stage-2 penalty's variants, written so that their gradients are easy to test."""
from __future__ import annotations

import torch

NORMS = ("l2", "l1")
#: What stage 2 penalises with the branch gate: "gated" s*F(h) (what is added to the stream), "ungated" F(h).
PENALTIES = ("gated", "ungated")


def l1_scales(scales: torch.Tensor, alive: list[int]) -> torch.Tensor:
    """Stage 1: sum of |s_i| over the layers not yet in the prune set.

    The paper optimises an equivalent constrained form with auxiliary variables; the plain
    subgradient gives the same updates while s stays away from 0 (it starts at 1).
    """
    if not alive:
        return scales.sum() * 0.0
    return scales[alive].abs().sum()


def identity_gap(diff: torch.Tensor, norm: str = "l2") -> torch.Tensor:
    """Stage 2 term for one layer: the per-token norm of X_out - X_in, averaged over tokens.

    Normalisation (the paper leaves it open; the released code takes one Frobenius norm of the
    whole batch tensor): a per-token vector norm over the hidden dimension, then the mean over
    batch and positions, so lambda2 does not depend on batch size or sequence length.
    ``l2`` = Euclidean norm, ``l1`` = sum of absolute values.  Not squared.
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    d = diff.float()
    per_token = d.norm(dim=-1) if norm == "l2" else d.abs().sum(dim=-1)
    return per_token.mean()


@torch.no_grad()
def relative_gap(diff: torch.Tensor, x_in: torch.Tensor) -> float:
    """Mean over tokens of ||X_out - X_in||_2 / ||X_in||_2: how far a layer is from identity."""
    num = diff.float().norm(dim=-1)
    den = x_in.float().norm(dim=-1).clamp_min(1e-12)
    return (num / den).mean().item()


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Distillation: KL(teacher || student) of the next-token distributions at `temperature`,
    averaged over tokens and scaled by T^2 (Hinton et al.), so its gradient scale does not depend on T."""
    if temperature <= 0:
        raise ValueError(f"kd temperature must be > 0, got {temperature}")
    s = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    t = torch.log_softmax(teacher_logits.float() / temperature, dim=-1)
    per_token = (t.exp() * (t - s)).sum(dim=-1)
    return per_token.mean() * temperature ** 2


def identity_penalty(gating, layers: list[int], norm: str = "l2", penalty: str = "gated") -> torch.Tensor:
    """Stage 2's sum over `layers` of `identity_gap`, from the X_out - X_in that `gating` captured.

    With the output gate the difference is always taken before the scale. With the branch gate the
    captured difference is s*F(h); "ungated" divides s back out (clamped at 1e-3), as the paper's
    X_out - X_in of the unscaled layer reads."""
    if penalty not in PENALTIES:
        raise ValueError(f"stage2_penalty must be one of {PENALTIES}, got {penalty!r}")
    terms = []
    for i in layers:
        d = gating.diffs[i]
        if gating.mode == "branch" and penalty == "ungated":
            d = d / gating.scale(i, d).clamp_min(1e-3)
        terms.append(identity_gap(d, norm).to(gating.scales.device))
    return torch.stack(terms).sum()

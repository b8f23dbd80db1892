"""TRSP under FSDP through accelerate: the glue.

Why: the paper trains every weight of LLaMA-2-7B/13B/70B in its stages; one GPU cannot hold a 13B
model's AdamW states. Under ``accelerate launch --config_file configs/accelerate/fsdp_*.yaml``
every process runs the same `trsp prune` / `trsp compare` code; this module is all that differs:

* training (gates, stage 1, stage 2, the healing fine-tune) runs on a copy of the model sharded
  with accelerate's FSDP2 (`fsdp2_prepare_model`: every decoder layer its own FSDP unit);
* each global micro-batch of ``batch_size`` rows is split across the processes, so the global
  batch, the optimizer steps and the mean loss equal the single-process run's; FSDP averages the
  weights' gradients, `reduce_grads` does the same for the gate vector (not an FSDP parameter);
* selections are decided on rank 0's gate values, broadcast first, so every rank agrees;
* the trained weights are gathered (full tensors) into the plain model, where folding and
  removal run as in one process; rank 0 writes the stock Hugging Face checkpoint.

Outside `accelerate launch` nothing here changes a thing; several processes without FSDP are refused.
"""
from __future__ import annotations

import copy
import functools
import os
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

CONFIG_HINT = "launch with accelerate launch --config_file configs/accelerate/fsdp_<cpu2|gpu2|gpu4|gpu8|gpu8_70b>.yaml"


def active() -> bool:
    """Whether this process was started by `accelerate launch` with an FSDP configuration."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true")


@functools.lru_cache(maxsize=1)
def accelerator():
    """The process's accelerate `Accelerator` (starts the process group once); FSDP2 only."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    cpu = os.environ.get("ACCELERATE_USE_CPU", "false").lower() in ("1", "true") or not torch.cuda.is_available()
    acc = Accelerator(cpu=cpu)
    if acc.distributed_type == DistributedType.MULTI_CPU:
        # accelerate 1.15 turns FSDP on only for accelerators; on the CPU (gloo: the tests) the
        # plugin it parses from the same launch config is attached here. FSDP2 itself runs on CPU.
        acc.state.fsdp_plugin = FullyShardedDataParallelPlugin()
        acc.state.distributed_type = DistributedType.FSDP
    version = getattr(acc.state.fsdp_plugin, "fsdp_version", 1)
    if version != 2:
        raise ValueError(f"trsp needs FSDP2 (fsdp_version: 2 in the accelerate config, got {version}); {CONFIG_HINT}")
    return acc


def start() -> None:
    """At the start of a command: join the process group under FSDP (and pick this rank's GPU)."""
    if active():
        accelerator()
    elif int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError(f"{os.environ['WORLD_SIZE']} processes were launched without FSDP: each would prune on its "
                         f"own and overwrite the others' results; {CONFIG_HINT}")


def world() -> int:
    return accelerator().num_processes if active() else 1


def rank() -> int:
    return accelerator().process_index if active() else 0


def is_main() -> bool:
    return not active() or accelerator().is_main_process


def check_batch(batch_size: int) -> None:
    """The global micro-batch must split evenly, or the processes would train on different totals."""
    w = world()
    if batch_size % w:
        raise ValueError(f"batch_size {batch_size} does not split over {w} processes: use a multiple of {w} "
                         f"(--batch-size; lower --grad-accum to keep batch_size x grad_accum, the global batch)")


def check_speed(speed: bool) -> None:
    """Timing under accelerate launch would measure processes sharing the machine."""
    if speed and world() > 1:
        raise ValueError("speed under accelerate launch would time processes sharing the machine: pass --no-speed "
                         "and time the saved checkpoint with trsp speed")


def local_rows(x: torch.Tensor) -> torch.Tensor:
    """This process's share of a global micro-batch (contiguous rows; all ranks draw the same batch)."""
    w = world()
    if w == 1:
        return x
    per = x.shape[0] // w
    return x[rank() * per:(rank() + 1) * per]


def shard(model: nn.Module, keep: tuple = ()) -> nn.Module:
    """A training copy of `model` sharded by accelerate's FSDP2; `model` itself when not distributed.

    `keep` are objects the copy must share with the original rather than duplicate (the `Gating`
    and its scale vector: hooks and gated layers of both point at the same gates).
    """
    if not active():
        return model
    from accelerate.utils.fsdp_utils import fsdp2_apply_ac, fsdp2_prepare_model
    from torch.distributed.fsdp import FSDPModule

    from .adapters import get_layers

    acc = accelerator()
    memo: dict[int, Any] = {id(k): k for k in keep}
    work = copy.deepcopy(model, memo)
    try:
        if acc.state.fsdp_plugin.activation_checkpointing:  # what Accelerator.prepare does before sharding
            acc.state.fsdp_plugin.set_auto_wrap_policy(work)
            work = fsdp2_apply_ac(acc, work)
        work = fsdp2_prepare_model(acc, work)
    except ValueError as err:  # accelerate: "Could not find the transformer layer class ..."
        raise ValueError(f"FSDP cannot wrap the decoder layers of {type(model).__name__}: {str(err).splitlines()[0]} "
                         "Fix fsdp_transformer_layer_cls_to_wrap in the accelerate config (or remove it)") from None
    layers = [getattr(layer, "layer", layer) for layer in get_layers(work)]  # inside the gate wrappers
    if not all(isinstance(layer, FSDPModule) for layer in layers):
        names = sorted({type(layer).__name__ for layer in layers})
        raise ValueError(f"FSDP did not wrap the decoder layers ({', '.join(names)}) of {type(model).__name__}: the "
                         "model lists none in _no_split_modules; set fsdp_transformer_layer_cls_to_wrap: "
                         f"{names[0]} in the accelerate config")
    return work


@torch.no_grad()
def gather_into(work: nn.Module, model: nn.Module) -> None:
    """Copy the trained (sharded) weights of `work` into the plain `model`, on every rank."""
    if work is model:
        return
    from torch.distributed.tensor import DTensor

    target = dict(model.named_parameters())
    for name, p in work.named_parameters():  # same order on every rank: each full_tensor is a collective
        full = p.full_tensor() if isinstance(p, DTensor) else p
        name = name.replace("_checkpoint_wrapped_module.", "")  # activation checkpointing's wrapper
        target[name].copy_(full.to(device=target[name].device, dtype=target[name].dtype))


def reduce_grads(*params: torch.Tensor) -> None:
    """Average the gradients of parameters FSDP does not manage (the gates) over the processes."""
    if world() == 1:
        return
    for p in params:
        if p.grad is not None:  # the gates may sit on the CPU while NCCL reduces on the GPU
            g = p.grad.to(accelerator().device)
            torch.distributed.all_reduce(g, op=torch.distributed.ReduceOp.SUM)
            p.grad.copy_(g.div_(world()).to(p.grad.device))


def mean(*values: float) -> list[float]:
    """The per-process values (losses of each share) averaged over the processes: the global means."""
    if world() == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=accelerator().device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
    return (t / world()).tolist()


@torch.no_grad()
def from_main(t: torch.Tensor) -> torch.Tensor:
    """Overwrite `t` with rank 0's values (before a selection: every rank decides on the same numbers)."""
    if world() > 1:
        buf = t.detach().to(accelerator().device).clone()
        torch.distributed.broadcast(buf, src=0)
        t.copy_(buf.to(t.device))
    return t


def agree(flag: bool) -> bool:
    """Rank 0's answer to a yes/no question (e.g. "is this result cached?"), on every rank."""
    if world() == 1:
        return flag
    t = torch.tensor([int(flag)], device=accelerator().device)
    torch.distributed.broadcast(t, src=0)
    return bool(t.item())


def main_object(obj: Any) -> Any:
    """Rank 0's picklable `obj` on every rank (lm-eval hands its results to local rank 0 only)."""
    if world() == 1:
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0, device=accelerator().device)
    return box[0]


def main_writes(fn: Callable) -> Callable:
    """Decorator: only rank 0 writes (a checkpoint); the other ranks return the destination."""
    @functools.wraps(fn)
    def wrapper(model, tokenizer, out_dir, *args, **kwargs):
        if is_main():
            return fn(model, tokenizer, out_dir, *args, **kwargs)
        from pathlib import Path
        return Path(out_dir)
    return wrapper

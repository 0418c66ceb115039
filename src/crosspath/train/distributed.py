"""torch.distributed for the trainers: join the torchrun group, sum gradients and numbers, copy weights.

Processes started by `torchrun` find RANK / WORLD_SIZE / LOCAL_RANK in the environment;
`init_distributed` joins the group (nccl on GPU, gloo on CPU). Trainers keep the LoRA weights equal on
every rank by starting from rank 0's (`broadcast_params`) and summing the gradients of losses that
are already divided by the global batch size (`all_reduce_grads`), so W ranks x B/W questions give
the gradient of 1 rank x B questions. Only rank 0 writes the run directory (each rank its RNG file).

Every function here is the identity (or a no-op) in a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | None = None) -> Dist:
    """Join the torchrun process group when WORLD_SIZE > 1 (nccl on CUDA, else gloo).

    Device: `device` if given, else cuda:<LOCAL_RANK> when CUDA is available, else cpu.
    """
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return Dist(rank, world, local, device)


def _dist_on() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(values: list[float], op: str = "sum") -> list[float]:
    """Sum (or max) a few floats over all ranks (identity in one process). float64, exact for counts."""
    if not _dist_on():
        return [float(v) for v in values]
    import torch.distributed as dist

    device = f"cuda:{torch.cuda.current_device()}" if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return t.tolist()


def all_reduce_grads(params) -> None:
    """Sum the gradients of `params` over all ranks in one flat buffer (missing grads count as 0)."""
    if not _dist_on():
        return
    import torch.distributed as dist

    params = list(params)
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])  # [sum of numel]
    dist.all_reduce(flat)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset: offset + n].view_as(p).clone()
        offset += n


def broadcast_params(params, src: int = 0) -> None:
    """Copy rank `src`'s values of `params` to every rank."""
    if not _dist_on():
        return
    import torch.distributed as dist

    for p in params:
        dist.broadcast(p.data, src)


def barrier() -> None:
    if _dist_on():
        import torch.distributed as dist

        dist.barrier()


def all_gather_objects(obj: Any) -> list[Any]:
    """[obj of rank 0, obj of rank 1, ...] (a one-element list in one process)."""
    if not _dist_on():
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out

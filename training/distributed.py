"""Multi-process training with torchrun: DistributedDataParallel, gloo on CPU, NCCL on GPU.

    torchrun --nproc_per_node=2 -m training --data ... --ann ...

Started without torchrun (no ``WORLD_SIZE`` above 1) everything here is a no-op for one process. Only rank 0
prints and writes files; metrics are gathered from every rank before they are computed.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class RankInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init() -> RankInfo:
    """Join the process group when started by torchrun; returns this process's rank."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return RankInfo()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
    return RankInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def shutdown() -> None:
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def active() -> bool:
    return dist.is_initialized() and dist.get_world_size() > 1


def print0(*args, **kwargs) -> None:
    if not active() or dist.get_rank() == 0:
        print(*args, **kwargs, flush=True)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if active():
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def gather_rows(indices: list[int], rows: torch.Tensor, n: int) -> torch.Tensor:
    """Reassemble per-rank ``rows`` (for dataset ``indices``) into one (n, ...) tensor on every rank."""
    if not active():
        return rows
    parts = [None] * dist.get_world_size()
    dist.all_gather_object(parts, (indices, rows))
    out = None
    for idx, r in parts:
        if out is None:
            out = torch.zeros((n,) + tuple(r.shape[1:]), dtype=r.dtype)
        if len(idx):
            out[torch.as_tensor(idx)] = r
    return out


def wrap(module: torch.nn.Module, info: RankInfo, device: torch.device) -> torch.nn.Module:
    """``module`` under DistributedDataParallel when several processes train, else itself."""
    if info.world <= 1:
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(module, device_ids=[device.index] if device.type == "cuda" else None)


@contextlib.contextmanager
def main_first(info: RankInfo):
    """Rank 0 runs the block first (e.g. computes and caches features); the others follow and read its result."""
    if info.world > 1 and not info.is_main:
        dist.barrier()
    yield
    if info.world > 1 and info.is_main:
        dist.barrier()


def pick_device(args, rank_info: RankInfo) -> torch.device:
    if torch.cuda.is_available():
        if rank_info.world > 1:
            return torch.device(f"cuda:{rank_info.local_rank}")
        return torch.device(f"cuda:{args.device_ids[0]}")
    if args.device_ids != [0] or rank_info.is_main:
        print0(f"note: no GPU available, --device_ids {' '.join(map(str, args.device_ids))} ignored; "
                 "training on CPU")
    return torch.device("cpu")

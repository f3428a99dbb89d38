"""Multi-process training through ``torchrun``: process group, device per rank, rank-0 duties.

``torchrun --nproc_per_node N -m impasto ...`` (or ``torchrun --nproc_per_node N script.py``)
starts N processes and sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and
``MASTER_PORT``. :func:`init_distributed` reads them, joins the process group (NCCL on CUDA,
gloo on CPU) and gives each process its device (``cuda:LOCAL_RANK`` on CUDA). Without those
variables, or with a world of one, it does nothing and training runs in one process.
Only rank 0 writes checkpoints, logs and sample grids (:attr:`DistContext.is_main`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from impasto.train.loops.common import resolve_device

__all__ = ["DistContext", "all_gather_objects", "barrier", "close_distributed", "init_distributed"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank among ``world_size``, its device, whether it owns the files."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    initialized_here: bool = False  # this call created the process group (so close it at the end)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be a whole number, got {value!r}") from None


def init_distributed(device: str = "auto") -> DistContext:
    """The process group from torchrun's variables (if any) and this process's device.

    ``device`` is the user's setting (``auto``/``cpu``/``cuda``/``cuda:N``); under torchrun a
    CUDA setting becomes ``cuda:LOCAL_RANK``, one GPU per process.
    """
    world = _env_int("WORLD_SIZE", 1)
    rank, local = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    dev = resolve_device(device)
    if world <= 1:
        return DistContext(device=dev)
    if dev.type == "cuda":
        if local >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} CUDA device(s) here")
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    created = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo", init_method="env://")
        created = True
    log.info("process %d of %d on %s (%s)", rank, world, dev, dist.get_backend())
    return DistContext(rank=rank, world_size=world, local_rank=local, device=dev, initialized_here=created)


def barrier(ctx: DistContext) -> None:
    """Wait for every process (no-op in one process)."""
    if ctx.distributed:
        dist.barrier()


def all_gather_objects(ctx: DistContext, obj: Any) -> list[Any]:
    """``obj`` from every rank, in rank order (``[obj]`` in one process)."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def close_distributed(ctx: DistContext) -> None:
    """Leave the process group if :func:`init_distributed` created it."""
    if ctx.initialized_here and dist.is_initialized():
        dist.destroy_process_group()

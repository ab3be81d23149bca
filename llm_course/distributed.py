"""Chapter 5: data-parallel training on several processes (GPUs, or CPU cores) with torch.distributed.

`torchrun --nproc_per_node=N -m llm_course train ...` starts N copies of the same program and tells each,
through environment variables, its rank (0 ... N-1), the number of processes (the world size) and where to
meet the others. Every process holds a full copy of the model and trains on its own share of each batch;
DistributedDataParallel (DDP) averages the gradients of all processes during the backward pass, so every
copy takes the same optimizer step, as if one process had trained on the whole batch. With a per-process
batch of b windows, N processes train exactly like one process with batches of N x b windows.

Processes talk through a backend: NCCL between NVIDIA GPUs, gloo between CPU processes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from .utils import get_device

__all__ = [
    "DistributedContext",
    "close_distributed",
    "init_distributed",
    "is_distributed_launch",
    "shard_loaders",
    "wrap_model",
]

CHAPTER = 5

_TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in a distributed run, and the collective operations training needs."""

    rank: int  # this process, 0 ... world_size - 1; rank 0 is the one that prints and writes files
    world_size: int  # the number of processes
    local_rank: int  # this process on its machine: picks its GPU
    device: torch.device
    backend: str  # "nccl" or "gloo"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_mean(self, value: float) -> float:
        """The average of `value` over all processes (every process must call this at the same point)."""
        # NCCL only moves GPU tensors; gloo only CPU ones.
        device = self.device if self.backend == "nccl" else torch.device("cpu")
        total = torch.tensor([float(value)], dtype=torch.float64, device=device)
        dist.all_reduce(total)  # sums in place
        return total.item() / self.world_size

    def gather(self, value: Any) -> list[Any]:
        """Every process's `value` (any picklable object), in rank order, on every process (every process
        must call this at the same point)."""
        values = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def barrier(self) -> None:
        """Wait until every process gets here (e.g. until rank 0 has written a file the others read)."""
        dist.barrier()


def is_distributed_launch() -> bool:
    """True when this process was started by torchrun (or a similar launcher) with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(preferred_device: str | None = None) -> DistributedContext:
    """Join the process group that torchrun set up, and pick this process's device.

    The device is `preferred_device` or the best available; on CUDA, each process takes its own GPU,
    cuda:LOCAL_RANK (an index in `preferred_device` is ignored).
    CUDA devices use the NCCL backend, CPUs gloo.
    """
    missing = [name for name in _TORCHRUN_VARIABLES if name not in os.environ]
    if missing:
        raise ValueError(
            f"the environment variables {', '.join(missing)} are not set: start distributed training with "
            "`torchrun --nproc_per_node=N -m llm_course train ...`"
        )
    if not dist.is_available():
        raise RuntimeError("this build of PyTorch has no torch.distributed: train in a single process")
    rank, world_size, local_rank = (int(os.environ[name]) for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    device = get_device(preferred_device)
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"process {local_rank} on this machine needs GPU {local_rank}, but there are only "
                f"{torch.cuda.device_count()}: use --nproc_per_node={torch.cuda.device_count()} or fewer"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise ValueError(f"distributed training runs on cuda or cpu devices, not {device.type}: use --device cpu")
    dist.init_process_group(backend, rank=rank, world_size=world_size)
    return DistributedContext(rank, world_size, local_rank, device, backend)


def close_distributed() -> None:
    """Leave the process group (at the end of training, or after an error)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model: nn.Module, context: DistributedContext) -> DistributedDataParallel:
    """Wrap `model` (already on context.device) in DDP: its gradients are averaged over all processes.

    DDP copies rank 0's weights to every process when it is created, so all start from the same model.
    The model's buffers (the causal masks) never change, so they are not re-broadcast before each forward.
    """
    device_ids = [context.device.index] if context.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, forward_sync_buffers=False)


def shard_loaders(
    train_loader: DataLoader, val_loader: DataLoader, *, rank: int, world_size: int, seed: int = 0
) -> tuple[DataLoader, DataLoader]:
    """This process's share of the training and validation windows, as new loaders with the same batch size.

    The training windows are shuffled by a DistributedSampler: every process draws the same permutation
    (from `seed` and the epoch: `train_model` calls its set_epoch) and takes every world_size-th window of
    it, starting at its rank, so the processes' batch k together are the windows k * world_size * b ...
    (k + 1) * world_size * b - 1 of the permutation. A last incomplete batch is dropped. The validation
    windows are dealt out in order (padded by repeating a few when they do not divide evenly).
    """
    train_set, val_set = train_loader.dataset, val_loader.dataset
    batch_size = train_loader.batch_size
    if len(train_set) < world_size * batch_size:
        raise ValueError(
            f"the training split has {len(train_set)} windows, too few for {world_size} processes with "
            f"batch_size={batch_size} each (at least {world_size * batch_size} windows): use more text, fewer "
            "processes, a smaller batch size or a smaller stride"
        )
    if len(val_set) < world_size:
        raise ValueError(
            f"the validation split has {len(val_set)} windows, fewer than the {world_size} processes: use more "
            "text, fewer processes or a larger share for validation (a smaller train ratio)"
        )
    train_sampler = DistributedSampler(train_set, world_size, rank, shuffle=True, seed=seed, drop_last=True)
    val_sampler = DistributedSampler(val_set, world_size, rank, shuffle=False)
    workers = train_loader.num_workers
    return (
        DataLoader(train_set, batch_size=batch_size, sampler=train_sampler, drop_last=True, num_workers=workers),
        DataLoader(val_set, batch_size=val_loader.batch_size, sampler=val_sampler, num_workers=workers),
    )

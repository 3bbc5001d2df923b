"""Several processes: the ``torchrun`` process group, ``DistributedDataParallel``, the resumable sampler."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..devices import pick_device


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | None = None) -> DistributedContext:
    """Join the process group that ``torchrun`` describes in the environment (a no-op for one process)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is not None:
        chosen = torch.device(device)
        if chosen.type == "cuda" and chosen.index is None:
            chosen = torch.device("cuda", local_rank)
    elif torch.cuda.is_available():
        chosen = torch.device("cuda", local_rank)
    else:
        chosen = pick_device(None)
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if chosen.type == "cuda" else "gloo")
    return DistributedContext(rank, world_size, local_rank, chosen)


def wrap_distributed(
    module: nn.Module, context: DistributedContext, find_unused_parameters: bool = True
) -> nn.Module:
    """``DistributedDataParallel`` around ``module`` when several processes run; ``module`` otherwise."""
    if not context.enabled:
        return module
    device_ids = [context.device.index] if context.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(
        module, device_ids=device_ids, find_unused_parameters=find_unused_parameters
    )


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` (also for one process) that can start an epoch part-way after a resume, with
    any number of processes.

    An epoch's order is one permutation of the dataset, the same for every number of processes (seeded by
    the seed and the epoch, as ``DistributedSampler``'s). The processes take it in consecutive blocks of
    ``batch_size x processes`` samples, so a run that stopped after ``consumed`` samples resumes by skipping
    them and dealing out the rest: nothing is repeated or skipped when the number of processes changes
    (the last batch is padded with the first samples, as ``DistributedSampler`` pads).
    """

    def __init__(self, dataset, num_replicas: int, rank: int, seed: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.consumed = 0  # samples of this epoch's order already trained on, by any number of processes

    def order(self) -> list[int]:
        """This epoch's permutation of the dataset."""
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        return torch.randperm(len(self.dataset), generator=generator).tolist()

    def __iter__(self) -> Iterator[int]:
        remaining = self.order()[self.consumed :]
        if not remaining:
            return iter([])
        total = math.ceil(len(remaining) / self.num_replicas) * self.num_replicas
        padding = (remaining * math.ceil(total / len(remaining)))[: total - len(remaining)]
        return iter((remaining + padding)[self.rank :: self.num_replicas])

    def __len__(self) -> int:
        return math.ceil(max(0, len(self.dataset) - self.consumed) / self.num_replicas)


def resumable_loader(
    dataset: Dataset,
    batch_size: int,
    context: DistributedContext,
    seed: int,
    num_workers: int = 0,
    collate_fn: Callable | None = None,
) -> tuple[ResumableSampler, DataLoader]:
    """This process's share of ``dataset`` in batches, each epoch's order drawn from ``seed``
    (:class:`ResumableSampler`: call its ``set_epoch`` before each epoch)."""
    sampler = ResumableSampler(dataset, context.world_size, context.rank, seed)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_fn,
        pin_memory=context.device.type == "cuda",
        # Its own generator: creating an epoch's iterator must not draw from the global RNG, so that a
        # resumed run continues with the same random draws as an uninterrupted one.
        generator=torch.Generator().manual_seed(seed),
    )
    return sampler, loader


def barrier(context: DistributedContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.barrier()


def mean_over_processes(values: dict[str, float], context: DistributedContext) -> dict[str, float]:
    if not context.enabled:
        return values
    names = sorted(values)
    tensor = torch.tensor([values[n] for n in names], dtype=torch.float64, device=context.device)
    dist.all_reduce(tensor)
    return {n: float(v) / context.world_size for n, v in zip(names, tensor.tolist())}

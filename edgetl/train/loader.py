"""The training-split DataLoader that fine-tuning and quantization-aware training share."""

from __future__ import annotations

import os

from edgetl.train.distributed import DistInfo

MAX_GPU_WORKERS = 16


def loader_workers(requested: int, device_type: str, cached: bool) -> int:
    """`requested` workers, or where negative a count that keeps the device fed."""
    if requested >= 0:
        return requested
    if device_type == "cuda":  # one per core but one (the main process feeds the GPU)
        return min(MAX_GPU_WORKERS, max(1, (os.cpu_count() or 2) - 1))
    return 0 if cached else min(2, os.cpu_count() or 1)


def train_loader(dataset, cfg, dist: DistInfo, device_type: str):
    """(DataLoader, DistributedSampler) over `dataset`: this rank's shard of `cfg.batch_size` batches.

    The shuffle is a function of (seed, epoch) even in one process, so a resumed epoch sees the
    same order as the uninterrupted one (DistributedSampler with one replica does exactly that).
    """
    from torch.utils.data import DataLoader, DistributedSampler

    workers = loader_workers(cfg.workers, device_type, dataset.cached is not None)
    sampler = DistributedSampler(dataset, num_replicas=dist.world_size, rank=dist.rank, shuffle=True,
                                 seed=cfg.seed, drop_last=dist.enabled)
    per_rank_batch = max(1, cfg.batch_size // dist.world_size)
    return DataLoader(
        dataset, batch_size=per_rank_batch, sampler=sampler, num_workers=workers,
        pin_memory=device_type == "cuda", drop_last=len(dataset) > per_rank_batch * dist.world_size,
        persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None,
    ), sampler

"""A training data order that is a pure function of (seed, epoch), so a run can resume mid-epoch.

`ResumableSampler` shuffles with a generator seeded from the seed and the epoch, splits the
order across ranks like `DistributedSampler` (which it is, so Lightning keeps it), and can
start an epoch after the samples a checkpoint says were already consumed. Every index comes
with a seed of its own, derived from (seed, epoch, index), under which the dataset draws its
random crop, flip and caption: a sample looks the same whatever the worker count, the
prefetching or the number of devices, and whether or not the run was interrupted.

`ResumableLoader` is a DataLoader with `state_dict`/`load_state_dict`, which Lightning stores
in every checkpoint: the epoch, the seed and how many of this epoch's samples training steps
have consumed (counted as batches reach the model, not as workers prefetch them).
"""

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

SeededIndex = tuple[int, int]


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A well-spread 63-bit seed for one sample in one epoch, the same on every platform."""
    state = np.random.SeedSequence([seed % 2**64, epoch, index]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


@contextmanager
def seeded(seed: int):
    """Run a block under torch's CPU generator and `random` seeded with `seed`, then restore.

    The main process's own random streams (dropout, for instance) are left exactly as they
    were, so data loading never shifts them.
    """
    python_state = random.getstate()
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        random.seed(seed)
        try:
            yield
        finally:
            random.setstate(python_state)


class ResumableSampler(DistributedSampler):
    """Per-rank shuffled indices with per-sample seeds; resumable in the middle of an epoch."""

    def __init__(
        self, dataset: Dataset, num_replicas: int, rank: int, seed: int, drop_last: bool = False
    ):
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed,
            drop_last=drop_last,
        )  # fmt: skip
        self._skip = 0

    def resume(self, epoch: int, consumed: int) -> None:
        """Start the next pass in `epoch`, after this rank's first `consumed` samples."""
        self.set_epoch(epoch)
        self._skip = consumed

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self._skip = 0  # a resume point belongs to its own epoch only
        super().set_epoch(epoch)

    def __iter__(self) -> Iterator[SeededIndex]:
        order = list(super().__iter__())
        skip, self._skip = self._skip, 0
        for index in order[skip:]:
            yield index, sample_seed(self.seed, self.epoch, index)


class ResumableLoader(DataLoader):
    """A DataLoader over a `ResumableSampler` whose position Lightning checkpoints."""

    sampler: ResumableSampler

    def __init__(self, dataset: Dataset, sampler: ResumableSampler, **kwargs):
        super().__init__(dataset, sampler=sampler, **kwargs)
        self._epoch = sampler.epoch
        self._consumed_batches = 0

    def batch_consumed(self) -> None:
        """Called as each training batch reaches the model."""
        if self._epoch != self.sampler.epoch:
            self._epoch, self._consumed_batches = self.sampler.epoch, 0
        self._consumed_batches += 1

    def state_dict(self) -> dict[str, int]:
        consumed = self._consumed_batches if self._epoch == self.sampler.epoch else 0
        return {
            "epoch": self.sampler.epoch,
            "seed": self.sampler.seed,
            "consumed_samples": consumed * self.batch_size,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        # the order of the interrupted run, even if this one was started with another seed
        self.sampler.seed = state["seed"]
        self.sampler.resume(state["epoch"], state["consumed_samples"])
        self._epoch = state["epoch"]
        self._consumed_batches = state["consumed_samples"] // self.batch_size

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
    # what torch.random.fork_rng(devices=[]) does, without its checks on every sample
    python_state, torch_state = random.getstate(), torch.default_generator.get_state()
    torch.default_generator.manual_seed(seed)
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(python_state)
        torch.default_generator.set_state(torch_state)


def quotas(sizes: list[int], weights: list[float]) -> list[int]:
    """Samples per source in an epoch of sum(sizes) samples, proportional to the weights.

    Largest remainders round the shares, so the quotas add up to the epoch exactly.
    """
    total, weight_sum = sum(sizes), sum(weights)
    shares = [total * weight / weight_sum for weight in weights]
    counts = [int(share) for share in shares]
    by_remainder = sorted(range(len(shares)), key=lambda i: counts[i] - shares[i])
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return counts


def mixture_order(sizes: list[int], weights: list[float], generator: torch.Generator) -> list:
    """An epoch of indices into the concatenated sources, shuffled, with each source's quota.

    A source asked for more samples than it has is walked through in several permutations
    (no image repeats before all of that source's images were drawn); one asked for fewer
    gives a random subset.
    """
    order, offset = [], 0
    for size, count in zip(sizes, quotas(sizes, weights), strict=True):
        rounds = [torch.randperm(size, generator=generator) for _ in range(-(-count // size))]
        picked = torch.cat(rounds)[:count] if rounds else torch.empty(0, dtype=torch.long)
        order.append(picked + offset)
        offset += size
    combined = torch.cat(order)
    return combined[torch.randperm(len(combined), generator=generator)].tolist()


class ResumableSampler(DistributedSampler):
    """Per-rank shuffled indices with per-sample seeds; resumable in the middle of an epoch.

    With `mixture` ((size, weight) per source, the dataset being their concatenation) each
    epoch draws every source's share of the samples by weight.
    """

    def __init__(
        self,
        dataset: Dataset,
        num_replicas: int,
        rank: int,
        seed: int,
        drop_last: bool = False,
        mixture: list[tuple[int, float]] | None = None,
    ):
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed,
            drop_last=drop_last,
        )  # fmt: skip
        self.mixture = mixture if mixture and len({w for _, w in mixture}) > 1 else None
        self._skip = 0

    def _rank_order(self) -> list[int]:
        if self.mixture is None:
            return list(super().__iter__())
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        sizes, weights = zip(*self.mixture, strict=True)
        order = mixture_order(list(sizes), list(weights), generator)
        # as DistributedSampler: pad (or cut) to equal shares, then every num_replicas-th
        if self.drop_last:
            order = order[: self.total_size]
        else:
            order += (order * (-(-self.total_size // len(order))))[: self.total_size - len(order)]
        return order[self.rank : self.total_size : self.num_replicas]

    def resume(self, epoch: int, consumed: int) -> None:
        """Start the next pass in `epoch`, after this rank's first `consumed` samples."""
        self.set_epoch(epoch)
        self._skip = consumed

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self._skip = 0  # a resume point belongs to its own epoch only
        super().set_epoch(epoch)

    def __iter__(self) -> Iterator[SeededIndex]:
        order = self._rank_order()
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

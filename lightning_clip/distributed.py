"""Evaluation helpers that work alike in one process and under torch.distributed."""

from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import Tensor


def rank_and_world_size() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard(items: list) -> list:
    """This rank's strided share: every item goes to exactly one rank, none is repeated."""
    rank, world_size = rank_and_world_size()
    return items[rank::world_size]


def gather_objects(value) -> list:
    """`value` of every rank, in rank order (a one-element list in a single process)."""
    _, world_size = rank_and_world_size()
    if world_size == 1:
        return [value]
    gathered = [None] * world_size
    dist.all_gather_object(gathered, value)
    return gathered


def split_across_ranks(encode: Callable[[list[str]], Tensor]) -> Callable[[list[str]], Tensor]:
    """Each rank encodes every world_size-th text; every rank gets all features, in order."""
    _, world_size = rank_and_world_size()
    if world_size == 1:
        return encode

    def encode_share(texts: list[str]) -> Tensor:
        mine = shard(texts)
        shares = gather_objects(encode(mine).float().cpu() if mine else None)

        width = next(share for share in shares if share is not None).shape[1]
        ordered = torch.empty(len(texts), width)
        for owner, share in enumerate(shares):
            if share is not None:
                ordered[owner::world_size] = share
        return ordered

    return encode_share

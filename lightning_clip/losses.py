"""Symmetric contrastive (InfoNCE) loss over the global batch, gathered across devices."""

import torch
import torch.distributed as dist
import torch.distributed.nn  # noqa: F401  (autograd-aware collectives, not imported by default)
import torch.nn.functional as F
from torch import Tensor, nn

from .distributed import rank_and_world_size


def gather_with_grad(features: Tensor) -> Tensor:
    """(B, E) per device -> (world * B, E) in rank order; gradients flow back to every rank."""
    _, world_size = rank_and_world_size()
    if world_size == 1:
        return features
    return torch.cat(dist.nn.functional.all_gather(features), dim=0)


def gather_ids(ids: Tensor) -> Tensor:
    """(B,) identifiers per device -> (world * B,) in rank order, without gradients."""
    _, world_size = rank_and_world_size()
    if world_size == 1:
        return ids
    shares = [torch.empty_like(ids) for _ in range(world_size)]
    dist.all_gather(shares, ids.contiguous())
    return torch.cat(shares)


def text_ids(tokens: Tensor) -> Tensor:
    """(B, L) token ids -> (B,) int64 hashes: equal for captions that tokenise alike."""
    # a fixed odd multiplier per position; int64 products wrap, which a hash allows
    positions = torch.arange(tokens.shape[1], device=tokens.device, dtype=torch.int64)
    multipliers = (positions * 0x1E3779B97F4A7C15 % (1 << 62)) | 1
    return (tokens.to(torch.int64) * multipliers).sum(dim=1)


def positive_pairs(image_ids: Tensor, caption_ids: Tensor, rows: slice | None = None) -> Tensor:
    """(rows, world * B) bool: True where the image or the caption is the same item.

    The same image twice in a global batch, or two images with identical captions, are not
    negatives of each other: both count as right answers (multi-positive targets).
    """
    all_image_ids, all_caption_ids = gather_ids(image_ids), gather_ids(caption_ids)
    row_images = all_image_ids if rows is None else all_image_ids[rows]
    row_captions = all_caption_ids if rows is None else all_caption_ids[rows]
    same_image = row_images[:, None] == all_image_ids[None]
    same_caption = row_captions[:, None] == all_caption_ids[None]
    return same_image | same_caption


class ContrastiveLoss(nn.Module):
    """CLIP's loss: cross-entropy over image->text and text->image similarities, averaged.

    Every image is contrasted with every caption of the global batch. With `local_loss`, each
    device scores only its own rows against all gathered columns: the same gradients with a
    (B, world * B) matrix instead of (world * B, world * B).

    Given `image_ids` and `caption_ids` (per sample, e.g. the dataset index and `text_ids`),
    repeated images and identical captions in the global batch share the target
    probability instead of being pushed apart as negatives.
    """

    def __init__(self, local_loss: bool = False):
        super().__init__()
        self.local_loss = local_loss

    def forward(
        self,
        image_features: Tensor,
        text_features: Tensor,
        logit_scale: Tensor,
        image_ids: Tensor | None = None,
        caption_ids: Tensor | None = None,
    ) -> Tensor:
        """(B, E) normalised features and the exponentiated scale -> scalar loss."""
        rank, _ = rank_and_world_size()
        all_image_features = gather_with_grad(image_features)
        all_text_features = gather_with_grad(text_features)

        if self.local_loss:
            logits_per_image = logit_scale * image_features @ all_text_features.T
            logits_per_text = logit_scale * text_features @ all_image_features.T
            offset = rank * image_features.shape[0]
        else:
            logits_per_image = logit_scale * all_image_features @ all_text_features.T
            logits_per_text = logits_per_image.T
            offset = 0

        rows = logits_per_image.shape[0]
        if image_ids is None or caption_ids is None:
            labels = torch.arange(rows, device=image_features.device) + offset
        else:
            # the relation is symmetric, so one matrix serves both directions
            positives = positive_pairs(image_ids, caption_ids, slice(offset, offset + rows))
            labels = positives.float() / positives.sum(dim=1, keepdim=True)
        image_loss = F.cross_entropy(logits_per_image, labels)
        text_loss = F.cross_entropy(logits_per_text, labels)
        return (image_loss + text_loss) / 2


class SigmoidLoss(nn.Module):
    """SigLIP's loss (Zhai et al., 2023): every image-caption pair is its own binary task.

    Each device scores its own images against the captions of all devices, a (B, world * B)
    matrix; the full (world * B)^2 matrix never exists on one device. The loss is summed over
    captions and averaged over images, as in the paper.
    """

    def forward(
        self,
        image_features: Tensor,
        text_features: Tensor,
        logit_scale: Tensor,
        logit_bias: Tensor,
        image_ids: Tensor | None = None,
        caption_ids: Tensor | None = None,
    ) -> Tensor:
        """(B, E) normalised features, the exponentiated scale and the bias -> scalar loss.

        With `image_ids` and `caption_ids`, a repeated image or an identical caption is a
        positive pair, not a negative one.
        """
        rank, world_size = rank_and_world_size()
        all_text_features = gather_with_grad(text_features)

        logits = logit_scale * image_features @ all_text_features.T + logit_bias  # (B, W*B)
        batch_size = image_features.shape[0]
        if image_ids is None or caption_ids is None:
            labels = -torch.ones_like(logits)
            own = torch.arange(batch_size, device=logits.device)
            labels[own, own + rank * batch_size] = 1.0
        else:
            rows = slice(rank * batch_size, (rank + 1) * batch_size)
            labels = positive_pairs(image_ids, caption_ids, rows).to(logits.dtype) * 2 - 1
        # every rank averages over its own images; DDP's gradient mean makes it global
        return -F.logsigmoid(labels * logits).sum() / batch_size

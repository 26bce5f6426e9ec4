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


class ContrastiveLoss(nn.Module):
    """CLIP's loss: cross-entropy over image->text and text->image similarities, averaged.

    Every image is contrasted with every caption of the global batch. With `local_loss`, each
    device scores only its own rows against all gathered columns: the same gradients with a
    (B, world * B) matrix instead of (world * B, world * B).
    """

    def __init__(self, local_loss: bool = False):
        super().__init__()
        self.local_loss = local_loss

    def forward(self, image_features: Tensor, text_features: Tensor, logit_scale: Tensor) -> Tensor:
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

        labels = torch.arange(logits_per_image.shape[0], device=image_features.device) + offset
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
    ) -> Tensor:
        """(B, E) normalised features, the exponentiated scale and the bias -> scalar loss."""
        rank, world_size = rank_and_world_size()
        all_text_features = gather_with_grad(text_features)

        logits = logit_scale * image_features @ all_text_features.T + logit_bias  # (B, W*B)
        batch_size = image_features.shape[0]
        labels = -torch.ones_like(logits)
        own = torch.arange(batch_size, device=logits.device)
        labels[own, own + rank * batch_size] = 1.0
        # every rank averages over its own images; DDP's gradient mean makes it global
        return -F.logsigmoid(labels * logits).sum() / batch_size

"""CLIPModel: two towers whose only interaction is a dot product scaled by `logit_scale`."""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .towers import HFImageTower, ImageTower, TextTower


@dataclass
class CLIPOutput:
    image_features: Tensor  # (B, E), L2-normalised
    text_features: Tensor  # (B, E), L2-normalised
    logit_scale: Tensor  # scalar, already exponentiated and clamped
    logit_bias: Tensor | None = None  # scalar, for the sigmoid loss


class CLIPModel(nn.Module):
    """An image tower and a text tower that embed into one space of size `embed_dim`."""

    def __init__(
        self,
        image_tower: ImageTower | HFImageTower,
        text_tower: TextTower,
        init_logit_scale: float = math.log(1 / 0.07),
        max_logit_scale: float = 100.0,
        init_logit_bias: float | None = None,
    ):
        super().__init__()
        self.image_tower = image_tower
        self.text_tower = text_tower
        # learnable log of the scale; CLIP starts at a temperature of 0.07
        self.logit_scale = nn.Parameter(torch.tensor(float(init_logit_scale)))
        self.max_log_scale = math.log(max_logit_scale)
        # the sigmoid loss adds a learnable bias to every logit (SigLIP starts it at -10)
        self.logit_bias = None
        if init_logit_bias is not None:
            self.logit_bias = nn.Parameter(torch.tensor(float(init_logit_bias)))

    def encode_image(self, images: Tensor, normalize: bool = True) -> Tensor:
        """(B, 3, H, W) -> (B, E)."""
        features = self.image_tower(images)
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, tokens: Tensor, normalize: bool = True) -> Tensor:
        """(B, L) -> (B, E)."""
        features = self.text_tower(tokens)
        return F.normalize(features, dim=-1) if normalize else features

    def scale(self) -> Tensor:
        """exp(logit_scale), never above `max_logit_scale` even between clamps."""
        return self.logit_scale.clamp(max=self.max_log_scale).exp()

    @torch.no_grad()
    def clamp_logit_scale(self) -> None:
        """Pull the parameter back to the clamp after an optimizer step pushed it past."""
        self.logit_scale.clamp_(0.0, self.max_log_scale)

    def forward(self, images: Tensor, tokens: Tensor) -> CLIPOutput:
        # similarities are computed in fp32 even under mixed precision
        image_features = self.encode_image(images).float()
        text_features = self.encode_text(tokens).float()
        bias = None if self.logit_bias is None else self.logit_bias.float()
        return CLIPOutput(image_features, text_features, self.scale().float(), bias)

"""Using a trained model without a Trainer: load a checkpoint, embed, classify zero-shot."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from lightning_clip.data.images import load_rgb
from lightning_clip.data.tokenizer import CaptionTokenizer
from lightning_clip.data.transforms import build_transform
from lightning_clip.evaluate import load_module
from lightning_clip.models import CLIPModel
from lightning_clip.zeroshot.classifier import build_zeroshot_weights
from lightning_clip.zeroshot.templates import ClassName


@dataclass
class LoadedCLIP:
    """A trained model with the preprocessing it expects."""

    model: CLIPModel
    image_transform: Any  # PIL image -> (3, H, W) tensor
    tokenizer: CaptionTokenizer  # captions -> (B, L) tokens
    image_data_config: dict[str, Any]

    @property
    def device(self) -> torch.device:
        return self.model.logit_scale.device

    def _pixels(self, images: list[Image.Image | str | Path] | Tensor) -> Tensor:
        if isinstance(images, Tensor):
            return images.to(self.device)
        pictures = [load_rgb(i) if isinstance(i, str | Path) else i.convert("RGB") for i in images]
        return torch.stack([self.image_transform(p) for p in pictures]).to(self.device)

    @torch.no_grad()
    def encode_image(self, images: list[Image.Image | str | Path] | Tensor) -> Tensor:
        """PIL images, image paths or an already transformed (B, 3, H, W) batch -> (B, E)."""
        return self.model.encode_image(self._pixels(images)).float()

    @torch.no_grad()
    def encode_text(self, captions: list[str]) -> Tensor:
        """Captions -> (B, E) unit-length features."""
        return self.model.encode_text(self.tokenizer(captions).to(self.device)).float()

    @torch.no_grad()
    def classify(
        self,
        images: list[Image.Image | str | Path] | Tensor,
        class_names: list[ClassName],
        templates: list[str],
    ) -> Tensor:
        """Zero-shot class probabilities, (B, C), from class names and prompt templates."""
        weights = build_zeroshot_weights(self.encode_text, class_names, templates)  # (E, C)
        logits = self.model.scale() * self.encode_image(images) @ weights.to(self.device)
        return logits.softmax(dim=-1)


def load(checkpoint: str | Path, device: str = "cpu") -> LoadedCLIP:
    """The model of a train.py checkpoint, its image transform and its tokenizer."""
    module = load_module(checkpoint, device)
    data_config = module.image_data_config
    return LoadedCLIP(
        model=module.model.eval(),
        image_transform=build_transform(data_config, train=False),
        tokenizer=module.tokenizer,
        image_data_config=data_config,
    )

"""lightning-clip: contrastive image-text training with PyTorch Lightning."""

from lightning_clip.data.datamodule import ImageTextDataModule
from lightning_clip.models import CLIPModel, ImageTower, TextTower
from lightning_clip.module import CLIPLitModule

__all__ = ["CLIPLitModule", "CLIPModel", "ImageTextDataModule", "ImageTower", "TextTower"]

"""Plain PyTorch model code: backbones, heads, towers and the two-tower CLIP model."""

from lightning_clip.models.clip import CLIPModel, CLIPOutput
from lightning_clip.models.towers import HFImageTower, ImageTower, TextTower

__all__ = ["CLIPModel", "CLIPOutput", "HFImageTower", "ImageTower", "TextTower"]

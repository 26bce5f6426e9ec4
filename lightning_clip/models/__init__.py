"""Plain PyTorch model code: backbones, heads, towers and the two-tower CLIP model."""

from .clip import CLIPModel, CLIPOutput
from .towers import HFImageTower, ImageTower, TextTower

__all__ = ["CLIPModel", "CLIPOutput", "HFImageTower", "ImageTower", "TextTower"]

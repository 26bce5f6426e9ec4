"""lightning-clip: contrastive image-text training with PyTorch Lightning.

Public names load on first use, so `lightning_clip.models` and `lightning_clip.losses` can be
imported as plain PyTorch without pulling in Lightning.
"""

import importlib

_PUBLIC = {
    "CLIPLitModule": "lightning_clip.module",
    "CLIPModel": "lightning_clip.models",
    "HFImageTower": "lightning_clip.models",
    "ImageTextDataModule": "lightning_clip.data.datamodule",
    "ImageTower": "lightning_clip.models",
    "TextTower": "lightning_clip.models",
    "load": "lightning_clip.inference",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'lightning_clip' has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name]), name)

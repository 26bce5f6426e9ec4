"""Train and eval image transforms resolved from the image backbone's own data config."""

from typing import Any

import timm.data
from torchvision import transforms as T


def build_transform(
    data_config: dict[str, Any],
    train: bool,
    scale: tuple[float, float] = (0.08, 1.0),
    hflip: float = 0.5,
    color_jitter: float = 0.0,
) -> T.Compose:
    """Random-resized-crop augmentation for training, resize + centre crop for evaluation.

    Size, interpolation, mean, std and crop_pct all come from `data_config` (timm's
    `resolve_data_config` of the backbone), so a pretrained backbone sees what it was
    trained on.
    """
    config = {
        key: data_config[key]
        for key in ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
        if key in data_config
    }
    if not train:
        return timm.data.create_transform(**config, is_training=False)

    config.pop("crop_pct", None)
    config.pop("crop_mode", None)
    return timm.data.create_transform(
        **config, is_training=True, scale=scale, hflip=hflip, color_jitter=color_jitter
    )

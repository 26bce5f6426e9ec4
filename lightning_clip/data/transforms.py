"""Train and eval image transforms resolved from the image backbone's own data config."""

import math
from dataclasses import dataclass
from typing import Any

import timm.data
from torchvision import transforms as T

# aspect ratios of the training crop (timm's and torchvision's default range)
CROP_RATIO = (3 / 4, 4 / 3)


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
        **config,
        is_training=True,
        scale=scale,
        ratio=CROP_RATIO,
        hflip=hflip,
        color_jitter=color_jitter,
    )


@dataclass(frozen=True)
class CropShrink:
    """How much smaller than stored an image may be decoded before a training crop loses detail.

    Called with an image's (width, height), it gives the largest factor by which the image
    can shrink while even the smallest random-resized crop (`min_scale` of the area, at the
    most elongated ratio) still covers `output_size` on both sides: every crop is then
    still scaled down to the output, never up, as it is from the full-size picture.
    """

    output_size: tuple[int, int]
    min_scale: float
    ratio: tuple[float, float] = CROP_RATIO

    def __call__(self, size: tuple[int, int]) -> float:
        width, height = size
        narrowest = min(self.ratio[0], 1 / self.ratio[1])
        smallest_crop_side = math.sqrt(self.min_scale * width * height * narrowest)
        return smallest_crop_side / max(self.output_size)


def training_crop_shrink(data_config: dict[str, Any], scale: tuple[float, float]) -> CropShrink:
    """The `CropShrink` of `build_transform(data_config, train=True, scale=scale)`."""
    _, height, width = data_config["input_size"]
    return CropShrink((height, width), min_scale=scale[0])

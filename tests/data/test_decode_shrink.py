"""Training JPEGs decoded at a fraction of their size, only where no crop loses detail."""

import math
import random

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as F
from PIL import Image

from lightning_clip.data.images import load_rgb
from lightning_clip.data.transforms import (
    CROP_RATIO,
    CropShrink,
    build_transform,
    training_crop_shrink,
)
from tests.conftest import shared_data

DATA_CONFIG = {
    "input_size": (3, 64, 64),
    "interpolation": "bicubic",
    "mean": (0.5, 0.5, 0.5),
    "std": (0.5, 0.5, 0.5),
}


def noise_image(width: int, height: int) -> Image.Image:
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def test_shrink_is_the_smallest_crop_side_over_the_output_side():
    shrink = training_crop_shrink(DATA_CONFIG, (0.08, 1.0))

    # the narrowest crop at 8% of 640 x 480: sqrt(0.08 * 640 * 480 * 3/4) = 135.8 px wide
    assert shrink((640, 480)) == pytest.approx(math.sqrt(0.08 * 640 * 480 * 0.75) / 64)
    assert shrink((480, 640)) == shrink((640, 480))  # an EXIF turn changes nothing
    assert training_crop_shrink(DATA_CONFIG, (0.5, 1.0))((640, 480)) == pytest.approx(
        math.sqrt(0.5 * 640 * 480 * 0.75) / 64
    )


@pytest.mark.parametrize(
    ("size", "decoded"),
    [
        ((640, 480), (320, 240)),  # allows 2.1 times smaller
        ((1280, 960), (320, 240)),  # allows 4.2 times: 1/4 is the largest step under it
        ((5120, 3840), (640, 480)),  # allows 17 times, but 1/8 is the smallest step
        ((400, 300), (400, 300)),  # allows 1.3 times: no step fits
    ],
)
def test_jpegs_decode_at_the_largest_fraction_the_shrink_allows(tmp_path, size, decoded):
    path = tmp_path / "photo.jpg"
    noise_image(*size).save(path, quality=90)

    image = load_rgb(path, training_crop_shrink(DATA_CONFIG, (0.08, 1.0)))

    assert image.mode == "RGB" and image.size == decoded
    assert load_rgb(path).size == size  # without a shrink: the stored size


def test_smallest_crop_of_a_shrunk_decode_still_covers_the_output(tmp_path):
    path = tmp_path / "photo.jpg"
    noise_image(1000, 700).save(path, quality=90)
    shrink = CropShrink((64, 64), min_scale=0.08)

    image = load_rgb(path, shrink)

    width, height = image.size
    assert (width, height) == (500, 350)
    narrowest = min(CROP_RATIO[0], 1 / CROP_RATIO[1])
    assert math.sqrt(0.08 * width * height * narrowest) >= 64


def test_other_formats_always_decode_at_full_size(tmp_path):
    path = tmp_path / "photo.png"
    noise_image(640, 480).save(path)

    assert load_rgb(path, CropShrink((64, 64), min_scale=0.08)).size == (640, 480)


def test_exif_orientation_still_applies_to_a_shrunk_decode(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise
    noise_image(1280, 960).save(tmp_path / "rotated.jpg", exif=exif, quality=90)

    image = load_rgb(tmp_path / "rotated.jpg", CropShrink((64, 64), min_scale=0.08))

    assert image.size == (240, 320)  # a quarter of the size, then turned


@pytest.mark.data
def test_training_crops_of_real_photos_change_less_than_a_two_pixel_shift():
    root = shared_data("coco_captions_mini")
    transform = build_transform(DATA_CONFIG, train=True, hflip=0.0)
    crop = transform.transforms[0]
    size = list(DATA_CONFIG["input_size"][1:])
    shrink = training_crop_shrink(DATA_CONFIG, (0.08, 1.0))

    shrunk_error, shift_error = [], []
    for seed, path in enumerate(sorted(root.rglob("*.jpg"))[:60]):
        full, small = load_rgb(path), load_rgb(path, shrink)
        if small.size == full.size:
            continue
        random.seed(seed)  # the crop draws from `random`: the same crop, in relative terms
        expected = transform(full)
        random.seed(seed)
        shrunk_error.append((transform(small) - expected).abs().mean())

        # the yardstick: the same crop of the full decode taken two pixels further on
        random.seed(seed)
        top, left, height, width = crop.get_params(full, crop.scale, crop.ratio)
        pixels = F.to_tensor(full)
        moved = F.resized_crop(pixels, top + 2, left + 2, height, width, size, antialias=True)
        exact = F.resized_crop(pixels, top, left, height, width, size, antialias=True)
        shift_error.append((moved - exact).abs().mean() / 0.5)  # in the normalised units

    assert len(shrunk_error) >= 30  # COCO's 640 px photos mostly decode at 320 px for 64 px
    assert torch.stack(shrunk_error).mean() < torch.stack(shift_error).mean()

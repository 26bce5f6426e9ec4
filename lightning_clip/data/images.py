"""Opening an image file of any PIL mode as a 3-channel RGB picture."""

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps

# (width, height) -> how many times smaller than stored a picture may be decoded
MaxShrink = Callable[[tuple[int, int]], float]


def _high_depth_to_8_bit(image: Image.Image) -> np.ndarray:
    """16-bit, 32-bit integer and float greyscale -> uint8, keeping absolute brightness."""
    values = np.asarray(image, dtype=np.float64)
    if image.mode.startswith("I;16"):
        full_scale = 65535.0
    elif image.mode == "F" and values.min() >= 0.0 and values.max() <= 1.0:
        full_scale = 1.0  # float images in [0, 1]
    elif values.min() >= 0.0 and values.max() <= 255.0:
        full_scale = 255.0  # 8-bit data stored in a wider mode
    elif values.min() >= 0.0 and values.max() <= 65535.0:
        full_scale = 65535.0
    else:
        # no known range: stretch what is there
        values = values - values.min()
        full_scale = max(values.max(), 1e-12)
    return (values / full_scale * 255.0).round().clip(0, 255).astype(np.uint8)


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        image = Image.fromarray(_high_depth_to_8_bit(image), mode="L")

    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")

    if image.mode in ("RGBA", "LA", "PA"):
        # transparent pixels become white rather than whatever colour they stored
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)

    return image if image.mode == "RGB" else image.convert("RGB")


def _decode_smaller(image: Image.Image, max_shrink: float) -> None:
    """Have a JPEG decoded at 1/2, 1/4 or 1/8 of its size, the largest that `max_shrink` allows.

    libjpeg skips most of the inverse DCT for these sizes, so this is cheaper than decoding
    everything and resizing afterwards.
    """
    factor = next((factor for factor in (8, 4, 2) if factor <= max_shrink), 1)
    if factor > 1:
        image.draft(None, (max(1, image.width // factor), max(1, image.height // factor)))


def load_rgb(
    path: str | Path | BinaryIO,
    max_shrink: MaxShrink | None = None,
) -> Image.Image:
    """Open `path` (or a binary file object), apply its EXIF orientation, return RGB.

    With `max_shrink` (such as a `CropShrink`), a JPEG may be decoded at a fraction of its
    stored size.
    Raises on files that are not images, are cut short, or are decompression-bomb sized.
    """
    with warnings.catch_warnings():
        # PIL only warns between MAX_IMAGE_PIXELS and twice that; refuse those as well
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        image = Image.open(path)
    try:
        if max_shrink is not None and image.format == "JPEG":
            _decode_smaller(image, max_shrink(image.size))
        # a single-frame image releases its file once loaded
        image.load()
    except BaseException:
        image.close()
        raise
    # in place: most photos need no turn, and then no copy is made either
    ImageOps.exif_transpose(image, in_place=True)
    rgb = _to_rgb(image)
    if rgb is image and getattr(image, "n_frames", 1) > 1:
        rgb = image.copy()  # a multi-frame file stays open: keep the first frame apart
    if rgb is not image:
        image.close()
    return rgb

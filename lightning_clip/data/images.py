"""Opening an image file of any PIL mode as a 3-channel RGB picture."""

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # high bit-depth greyscale: stretch its own range to 8 bits
        values = np.asarray(image, dtype=np.float32)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) / max(high - low, 1e-12) * 255.0
        image = Image.fromarray(scaled.round().astype(np.uint8), mode="L")

    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")

    if image.mode in ("RGBA", "LA", "PA"):
        # transparent pixels become white rather than whatever colour they stored
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)

    return image.convert("RGB")


def load_rgb(path: str | Path) -> Image.Image:
    """Open `path`, apply its EXIF orientation and return an RGB image; raises on bad files."""
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)
        image.load()
        return _to_rgb(image)

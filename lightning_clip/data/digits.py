"""The built-in default data: real handwritten digits written out as a caption dataset.

The 1,797 scanned digits (8x8 pixels, 16 grey levels) that scikit-learn ships with its
package (the UCI "Optical Recognition of Handwritten Digits" test set) are saved as PNG
files with a caption table, exactly the layout a user's own data would have:

    <root>/images/00000.png ...
    <root>/captions.csv   image,caption   (several captions per training image)
    <root>/heldout.csv    image,label     (images never trained on, for zero-shot)
    <root>/classes.txt    the ten class names, one per line

Captions are drawn from a bank of phrasings of each class name; the zero-shot prompt
templates in `conf/zeroshot/digits_templates.txt` use none of these phrasings.

    python -m lightning_clip.data.digits data/digits
"""

import argparse
import csv
import random
from pathlib import Path

import numpy as np
from PIL import Image

from lightning_clip.zeroshot.templates import DIGIT_CLASS_NAMES

# {word} is the class name ("seven"), {numeral} the digit itself ("7").
CAPTION_BANK = [
    "a handwritten {word}",
    "the digit {numeral}",
    "a scanned handwritten digit {word}",
    "{numeral}, written by hand",
    "a pixelated scan of the number {word}",
    "a small grey drawing of a {word}",
    "someone wrote the numeral {numeral}",
    "a {word} drawn with a pen",
    "the number {word}",
    "a tiny low resolution {numeral}",
    "handwriting: {word}",
    "digit {numeral} ({word}) from a form",
]

CAPTIONS_PER_IMAGE = 3
HELDOUT_FRACTION = 0.2
UPSCALE = 4  # 8x8 scans are saved at 32x32 so they open like any other small photo


def _save_image(pixels: np.ndarray, path: Path) -> None:
    # 16 grey levels, ink dark on white paper as on the original forms
    grey = (255 - pixels * (255 / 16)).round().clip(0, 255).astype(np.uint8)
    image = Image.fromarray(grey, mode="L")
    image.resize((8 * UPSCALE, 8 * UPSCALE), Image.Resampling.NEAREST).save(path)


def _captions(label: int, rng: random.Random) -> list[str]:
    phrasings = rng.sample(CAPTION_BANK, CAPTIONS_PER_IMAGE)
    return [p.format(word=DIGIT_CLASS_NAMES[label], numeral=label) for p in phrasings]


def prepare_digits(root: str | Path, seed: int = 0, force: bool = False) -> Path:
    """Write the digits caption dataset under `root` unless it is already complete."""
    from sklearn.datasets import load_digits  # ships its data inside the package

    root = Path(root)
    done_marker = root / ".complete"
    if done_marker.is_file() and not force:
        return root

    digits = load_digits()
    rng = random.Random(seed)
    order = list(range(len(digits.target)))
    rng.shuffle(order)
    num_heldout = round(len(order) * HELDOUT_FRACTION)
    heldout = set(order[:num_heldout])

    (root / "images").mkdir(parents=True, exist_ok=True)
    with (
        (root / "captions.csv").open("w", newline="", encoding="utf-8") as captions_file,
        (root / "heldout.csv").open("w", newline="", encoding="utf-8") as heldout_file,
    ):
        captions = csv.writer(captions_file)
        labels = csv.writer(heldout_file)
        captions.writerow(["image", "caption"])
        labels.writerow(["image", "label"])

        for index, (pixels, label) in enumerate(zip(digits.images, digits.target, strict=True)):
            name = f"images/{index:05d}.png"
            _save_image(pixels, root / name)
            if index in heldout:
                labels.writerow([name, DIGIT_CLASS_NAMES[label]])
            else:
                captions.writerows([name, text] for text in _captions(int(label), rng))

    (root / "classes.txt").write_text("\n".join(DIGIT_CLASS_NAMES) + "\n", encoding="utf-8")
    done_marker.write_text("ok\n")
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default="data/digits", help="output directory")
    parser.add_argument("--force", action="store_true", help="rewrite an existing dataset")
    args = parser.parse_args()
    root = prepare_digits(args.root, force=args.force)
    print(f"digits caption dataset ready in {root}")


if __name__ == "__main__":
    main()

"""A folder of images with sidecar text files: `cat.jpg` + `cat.txt`, one caption per line.

Subfolders are searched too. An image without a text file, or with an empty one, has no
caption and is left out (counted in the report); a text file without an image is ignored.
"""

from pathlib import Path

from lightning_clip.data.records import ImageCaptions, ReadReport, RecordBuilder
from lightning_clip.errors import InputError, MissingInputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def read_folder_captions(
    root: str | Path, caption_suffix: str = ".txt", report: ReadReport | None = None
) -> list[ImageCaptions]:
    """One record per image that has a caption file beside it; images in sorted path order."""
    root = Path(root)
    if not root.is_dir():
        raise MissingInputError(f"{root}: no such directory")
    report = report if report is not None else ReadReport()
    builder = RecordBuilder(report)

    images = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    for image in images:
        sidecar = image.with_suffix(caption_suffix)
        if not sidecar.is_file():
            report.uncaptioned_images += 1
            continue
        try:
            text = sidecar.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as error:
            line = sidecar.read_bytes()[: error.start].count(b"\n") + 1
            raise InputError(f"{sidecar}:{line}: not valid UTF-8 ({error.reason})") from None
        # blank lines are spacing between captions, not empty captions
        lines = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
        if not lines:
            report.uncaptioned_images += 1
        for number, caption in lines:
            builder.add(image, caption, f"{sidecar}:{number}")
    return builder.records()

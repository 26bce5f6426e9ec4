"""What every caption format reads into: one record per image with all of its captions."""

from dataclasses import dataclass, field
from pathlib import Path

from lightning_clip.errors import InputError


@dataclass
class ImageCaptions:
    image_path: Path
    captions: list[str]
    source: str  # "file:row" of the first row that named this image, for error messages


@dataclass
class ReadReport:
    """Counts of what a reader dropped, so nothing disappears silently."""

    empty_captions: int = 0
    uncaptioned_images: int = 0  # image files without any caption (image folders)
    multiline_captions: list[str] = field(default_factory=list)  # "file:line" of each


class RecordBuilder:
    """Collects (image, caption) pairs into one record per image, in first-seen order."""

    def __init__(self, report: ReadReport | None = None):
        self.report = report if report is not None else ReadReport()
        self._records: dict[Path, ImageCaptions] = {}

    def add(self, image_path: Path, caption: str, source: str) -> None:
        """Add one caption; empty ones are dropped and counted, never silently kept."""
        if not caption.strip():
            self.report.empty_captions += 1
            return
        if "\n" in caption:
            self.report.multiline_captions.append(source)
        if "\x00" in str(image_path):
            raise InputError(f"{source}: the image path {str(image_path)!r} holds a NUL byte")
        image_path = image_path.resolve()
        if image_path not in self._records:
            self._records[image_path] = ImageCaptions(image_path, [], source)
        self._records[image_path].captions.append(caption)

    def records(self) -> list[ImageCaptions]:
        return list(self._records.values())

"""What every caption format reads into: one record per image with all of its captions."""

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ImageCaptions:
    image_path: Path
    captions: list[str]
    source: str  # "file:row" of the first row that named this image, for error messages


@dataclass
class ReadReport:
    """Counts of what a reader dropped, so nothing disappears silently."""

    empty_captions: int = 0
    multiline_captions: list[str] = field(default_factory=list)  # "file:line" of each

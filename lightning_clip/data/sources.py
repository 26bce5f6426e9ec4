"""Caption sources in any supported format, read into records and mixed with weights."""

from dataclasses import dataclass
from pathlib import Path

from lightning_clip.data.formats.coco import read_coco_captions
from lightning_clip.data.formats.csv import read_csv_captions
from lightning_clip.data.formats.folder import read_folder_captions
from lightning_clip.data.formats.jsonl import read_jsonl_captions
from lightning_clip.data.records import ImageCaptions, ReadReport
from lightning_clip.errors import InputError

FORMATS = ("csv", "tsv", "jsonl", "coco", "folder", "webdataset")
_BY_SUFFIX = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".json": "coco"}


@dataclass
class CaptionSource:
    """One caption dataset on disk.

    Args:
        path: The table, JSON(L) file or image folder.
        format: csv, tsv, jsonl, coco or folder; by default from the suffix (.csv, .tsv,
            .jsonl, .json for COCO) or ``folder`` for a directory.
        weight: Share of each training epoch drawn from this source, relative to the other
            sources' weights (an epoch has as many samples as all sources have images).
        image_key: Column (csv/tsv) or key (jsonl) with the image path; defaults ``image``
            and ``file``.
        caption_key: Column or key with the caption(s); defaults ``caption`` and ``captions``.
        images_dir: COCO only: the folder of the image files (default: beside the JSON).
        samples_per_epoch: WebDataset only: samples per training epoch over all devices
            (every device then runs the same number of steps).
        resampled: WebDataset only: draw shards with replacement.
    """

    path: str
    format: str | None = None
    weight: float = 1.0
    image_key: str | None = None
    caption_key: str | None = None
    images_dir: str | None = None
    samples_per_epoch: int | None = None
    resampled: bool = False

    def resolved_format(self) -> str:
        if self.format is not None:
            if self.format not in FORMATS:
                raise InputError(
                    f"{self.path}: unknown caption format {self.format!r}; valid: {FORMATS}"
                )
            return self.format
        path = Path(self.path)
        if self.path.endswith(".tar") or "{" in self.path or self.path.startswith("pipe:"):
            return "webdataset"
        if path.is_dir():
            return "folder"
        if path.suffix.lower() in _BY_SUFFIX:
            return _BY_SUFFIX[path.suffix.lower()]
        raise InputError(
            f"{self.path}: cannot tell the caption format from the name; set format to one "
            f"of {FORMATS}"
        )


def as_source(value) -> CaptionSource:
    """A CaptionSource from itself or from a mapping (as YAML can deliver it)."""
    if isinstance(value, CaptionSource):
        return value
    try:
        return CaptionSource(**dict(value))
    except TypeError as error:
        valid = list(CaptionSource.__dataclass_fields__)
        raise InputError(f"data source {dict(value)}: {error}; valid keys: {valid}") from None


def read_source(source: CaptionSource, report: ReadReport) -> list[ImageCaptions]:
    """The source's records; errors name its file and, where there is one, the line."""
    if source.weight <= 0:
        raise InputError(f"{source.path}: weight={source.weight} is not allowed: it must be > 0")
    kind = source.resolved_format()
    if kind == "webdataset":
        raise InputError(f"{source.path}: WebDataset shards are streamed, not read as records")
    if kind in ("csv", "tsv"):
        return read_csv_captions(
            source.path,
            source.image_key or "image",
            source.caption_key or "caption",
            delimiter="\t" if kind == "tsv" else ",",
            report=report,
        )
    if kind == "jsonl":
        return read_jsonl_captions(
            source.path, source.image_key or "file", source.caption_key or "captions", report
        )
    if kind == "coco":
        return read_coco_captions(source.path, source.images_dir, report)
    return read_folder_captions(source.path, report=report)

"""JSON Lines caption files: one object per line, for one image or for one caption.

    {"file": "images/1.jpg", "captions": ["a dog", "a brown dog"]}   one object per image
    {"file": "images/1.jpg", "caption": "a dog"}                     one object per caption

`caption_key` may hold a string or a list of strings; objects naming the same image add to
it. Image paths are relative to the file. Other keys are ignored.
"""

import json
from pathlib import Path

from lightning_clip.data.records import ImageCaptions, ReadReport, RecordBuilder
from lightning_clip.errors import InputError, MissingInputError


def _lines(path: Path):
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                yield number, raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as error:
                raise InputError(f"{path}:{number}: not valid UTF-8 ({error.reason})") from None


def read_jsonl_captions(
    path: str | Path,
    image_key: str = "file",
    caption_key: str = "captions",
    report: ReadReport | None = None,
) -> list[ImageCaptions]:
    """One record per image with every caption the file gives it, in file order."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path}: no such file")
    builder = RecordBuilder(report)

    for number, line in _lines(path):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(f"{where}: not a JSON object ({error.msg})") from None
        if not isinstance(item, dict):
            raise InputError(f"{where}: expected a JSON object, found {type(item).__name__}")
        for key in (image_key, caption_key):
            if key not in item:
                raise InputError(f"{where}: no key {key!r}; the object has {sorted(item)}")

        image = item[image_key]
        if not isinstance(image, str) or not image.strip():
            raise InputError(f"{where}: {image_key!r} must be a non-empty path, not {image!r}")
        captions = item[caption_key]
        captions = [captions] if isinstance(captions, str) else captions
        if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
            raise InputError(f"{where}: {caption_key!r} must be a string or a list of strings")
        for caption in captions:
            builder.add(path.parent / image.strip(), caption, where)

    return builder.records()

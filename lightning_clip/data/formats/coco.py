"""COCO caption annotations: `captions_<split>.json` with `images` and `annotations` lists.

    {"images": [{"id": 139, "file_name": "000000000139.jpg"}, ...],
     "annotations": [{"image_id": 139, "caption": "A woman stands in the kitchen."}, ...]}

Image files are looked up in `images_dir` (by default the folder of the JSON file). COCO gives
about five captions per image; every one becomes a caption of that image's record.
"""

import json
from pathlib import Path

from lightning_clip.data.records import ImageCaptions, ReadReport, RecordBuilder
from lightning_clip.errors import InputError, MissingInputError


def _load(path: Path) -> dict:
    try:
        document = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: not valid UTF-8 ({error.reason})") from None
    except json.JSONDecodeError as error:
        raise InputError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from None
    if not isinstance(document, dict) or not {"images", "annotations"} <= document.keys():
        found = sorted(document) if isinstance(document, dict) else type(document).__name__
        raise InputError(
            f"{path}: a COCO captions file has 'images' and 'annotations' lists; found {found}"
        )
    return document


def read_coco_captions(
    path: str | Path, images_dir: str | Path | None = None, report: ReadReport | None = None
) -> list[ImageCaptions]:
    """One record per annotated image, captions in annotation order."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path}: no such file")
    images_dir = Path(images_dir) if images_dir is not None else path.parent
    document = _load(path)

    file_names = {}
    for position, image in enumerate(document["images"]):
        if not isinstance(image, dict) or not {"id", "file_name"} <= image.keys():
            raise InputError(f"{path}: images[{position}] needs 'id' and 'file_name'")
        file_names[image["id"]] = image["file_name"]

    builder = RecordBuilder(report)
    for position, annotation in enumerate(document["annotations"]):
        where = f"{path}: annotations[{position}]"
        if not isinstance(annotation, dict) or not {"image_id", "caption"} <= annotation.keys():
            raise InputError(f"{where} needs 'image_id' and 'caption'")
        if annotation["image_id"] not in file_names:
            raise InputError(f"{where}: image_id {annotation['image_id']!r} is not in 'images'")
        if not isinstance(annotation["caption"], str):
            raise InputError(f"{where}: 'caption' must be a string")
        image_path = images_dir / file_names[annotation["image_id"]]
        builder.add(image_path, annotation["caption"], where)
    return builder.records()

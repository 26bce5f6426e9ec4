"""Labelled image sets for zero-shot evaluation: an ImageFolder tree or a CSV with labels."""

from pathlib import Path

from lightning_clip.data.formats.csv import read_rows
from lightning_clip.errors import InputError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}


def _label_index(value: str | None, class_names: list[str], where: str) -> int:
    if value is None:
        raise InputError(f"{where}: the row has no label")
    value = value.strip()
    if value in class_names:
        return class_names.index(value)
    if value.lstrip("-").isdigit() and 0 <= int(value) < len(class_names):
        return int(value)
    raise InputError(
        f"{where}: label {value!r} is neither one of the {len(class_names)} class names "
        f"nor an index below {len(class_names)}"
    )


def read_image_folder(root: Path, class_names: list[str]) -> list[tuple[Path, int]]:
    """root/<class>/<image>: folders named after classes, or sorted folders in class order."""
    folders = sorted(path for path in root.iterdir() if path.is_dir())
    if len(folders) != len(class_names):
        raise InputError(f"{root}: {len(folders)} class folders but {len(class_names)} class names")
    by_name = all(folder.name in class_names for folder in folders)

    samples = []
    for position, folder in enumerate(folders):
        label = class_names.index(folder.name) if by_name else position
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                samples.append((path, label))
    return samples


def read_labelled_images(
    path: str | Path,
    class_names: list[str],
    image_column: str = "image",
    label_column: str = "label",
) -> list[tuple[Path, int]]:
    """(image path, class index) pairs from an ImageFolder directory or a CSV/TSV file.

    CSV labels may be class names or integer class indices; image paths are relative to the
    file.
    """
    path = Path(path)
    if path.is_dir():
        samples = read_image_folder(path, class_names)
    else:
        samples = []
        for line, row in read_rows(path, [image_column, label_column]):
            image_name = (row[image_column] or "").strip()
            if not image_name:
                raise InputError(f"{path}:{line}: empty value in column {image_column!r}")
            label = _label_index(row[label_column], class_names, f"{path}:{line}")
            samples.append(((path.parent / image_name).resolve(), label))
    if not samples:
        raise InputError(f"{path}: no labelled images found")
    return samples

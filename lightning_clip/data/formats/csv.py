"""Caption tables in CSV or TSV: one row per caption, image paths relative to the file."""

import csv
from pathlib import Path

from lightning_clip.data.records import ImageCaptions, ReadReport, RecordBuilder
from lightning_clip.errors import InputError, MissingInputError


def _delimiter(path: Path, delimiter: str | None) -> str:
    if delimiter is not None:
        return delimiter
    return "\t" if path.suffix.lower() in (".tsv", ".tab") else ","


def _first_undecodable_line(path: Path) -> int:
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 0


def read_rows(path: str | Path, columns: list[str], delimiter: str | None = None):
    """Yield (line number, row dict) for each data row; checks that `columns` exist.

    Every value stays a string: words such as NA, null or None are kept as text. A row with
    more fields than the header, or a quote that is never closed, is an error naming its
    line, because both silently merge or cut captions otherwise.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path}: no such file")

    # utf-8-sig also reads the byte-order mark that spreadsheet programs write
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle, delimiter=_delimiter(path, delimiter), strict=True)
        line = 1
        try:
            header = reader.fieldnames or []
            missing = [column for column in columns if column not in header]
            if missing:
                raise InputError(f"{path}: missing column(s) {missing}; the header has {header}")
            for row in reader:
                first_line, line = line + 1, reader.line_num
                if None in row:
                    raise InputError(
                        f"{path}:{first_line}: {len(header) + len(row[None])} fields but the "
                        f"header has {len(header)}; quote values that contain "
                        f"{reader.reader.dialect.delimiter!r}"
                    )
                yield first_line, row
        except UnicodeDecodeError as error:
            bad_line = _first_undecodable_line(path)
            raise InputError(f"{path}:{bad_line}: not valid UTF-8 ({error.reason})") from None
        except csv.Error as error:
            raise InputError(
                f"{path}:{line + 1}: malformed row ({error}); look for an unclosed quote"
            ) from None


def read_csv_captions(
    path: str | Path,
    image_column: str = "image",
    caption_column: str = "caption",
    delimiter: str | None = None,
    report: ReadReport | None = None,
) -> list[ImageCaptions]:
    """Group a caption table by image; rows naming the same image add captions to it."""
    path = Path(path)
    builder = RecordBuilder(report)
    for line, row in read_rows(path, [image_column, caption_column], delimiter):
        image_name = (row[image_column] or "").strip()
        if not image_name:
            raise InputError(f"{path}:{line}: empty value in column {image_column!r}")
        builder.add(path.parent / image_name, row[caption_column] or "", f"{path}:{line}")
    return builder.records()

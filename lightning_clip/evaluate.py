"""Evaluation of a trained checkpoint: zero-shot and retrieval sets, a table and JSON."""

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from lightning_clip import metrics
from lightning_clip.callbacks.zeroshot import ZeroShotEval
from lightning_clip.data.datasets import CaptionDataset
from lightning_clip.data.formats.csv import read_csv_captions
from lightning_clip.data.transforms import build_transform
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
    if not Path(checkpoint).is_file():
        raise FileNotFoundError(f"{checkpoint}: no such checkpoint")
    module = CLIPLitModule.load_from_checkpoint(checkpoint, map_location=device)
    return module.eval()


@torch.no_grad()
def evaluate_zeroshot(module: CLIPLitModule, spec: ZeroShotSet, batch_size: int) -> dict:
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
    results = evaluator.evaluate(module, evaluator.samples)
    return {metrics.zeroshot_key(spec.name, key): value for key, value in results.items()}


@torch.no_grad()
def evaluate_retrieval(module: CLIPLitModule, spec: RetrievalSet, batch_size: int) -> dict:
    records = read_csv_captions(spec.captions, spec.image_column, spec.caption_column)
    transform = build_transform(module.image_data_config, train=False)
    dataset = CaptionDataset(records, transform, module.tokenizer, train=False)
    loader = DataLoader(dataset, batch_size=batch_size)

    image_features = torch.cat(
        [
            module.model.encode_image(batch["image"].to(module.device)).float().cpu()
            for batch in loader
        ]
    )
    captions = [caption for record in records for caption in record.captions]
    caption_image = [index for index, r in enumerate(records) for _ in r.captions]
    text_features = module.encode_captions(captions, batch_size).cpu()

    results = metrics.retrieval_recall(image_features, text_features, torch.tensor(caption_image))
    # the gallery is this set, not the validation split: name the keys after it
    return {f"retrieval/{spec.name}/{key.split('/')[-1]}": value for key, value in results.items()}


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

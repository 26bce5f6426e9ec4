"""ZeroShotEval: classify a labelled image set from class names and prompt templates."""

import torch
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.utilities import rank_zero_warn
from torch.utils.data import DataLoader
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassRecall,
)

from lightning_clip import metrics
from lightning_clip.data.datasets import LabelledImageDataset, collate_readable
from lightning_clip.data.formats.labelled import read_labelled_images
from lightning_clip.data.transforms import build_transform
from lightning_clip.distributed import shard, split_across_ranks
from lightning_clip.errors import InputError
from lightning_clip.zeroshot.classifier import build_zeroshot_weights
from lightning_clip.zeroshot.templates import ClassName, resolve_prompts


def zeroshot_metrics(num_classes: int) -> MetricCollection:
    top_k = {"top5": min(5, num_classes)}
    return MetricCollection(
        {
            "top1": MulticlassAccuracy(num_classes, top_k=1, average="micro"),
            "top5": MulticlassAccuracy(num_classes, top_k=top_k["top5"], average="micro"),
            "mean_per_class_recall": MulticlassRecall(num_classes, average="macro"),
            "confusion": MulticlassConfusionMatrix(num_classes),
        }
    )


class ZeroShotEval(Callback):
    """Zero-shot top-1, top-5 and mean per-class recall, logged as zeroshot/<name>/<metric>."""

    def __init__(
        self,
        name: str,
        images: str,
        class_names: list[ClassName] | str,
        templates: list[str] | str,
        prompts_key: str | None = None,
        image_column: str = "image",
        label_column: str = "label",
        batch_size: int = 256,
        num_workers: int = 0,
        every_n_epochs: int = 1,
    ):
        """
        Args:
            name: Name of the set in metric keys, e.g. ``cifar10``.
            images: ImageFolder directory, or CSV/TSV with image and label columns.
            class_names: Class names in label order (a synonym list per class is allowed),
                or a path to a JSON, YAML or one-per-line text file.
            templates: Prompt templates with a ``{}`` placeholder, or a path to a file.
            prompts_key: Entry to read from a prompt file that holds several datasets.
            image_column: CSV column with image paths, relative to the CSV.
            label_column: CSV column with class names or class indices.
            batch_size: Images per forward pass.
            num_workers: Loader worker processes.
            every_n_epochs: Evaluate at every n-th validation.
        """
        super().__init__()
        self.name = name
        self.sources = (images, class_names, templates, prompts_key, image_column, label_column)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.every_n_epochs = every_n_epochs
        self.class_names: list[ClassName] = []
        self.templates: list[str] = []
        self.samples: list = []
        self.confusion: torch.Tensor | None = None  # (C, C) of the last evaluation

    def load(self) -> None:
        """Read class names, templates and labelled images; raises naming what is wrong."""
        if self.samples:
            return
        images, class_names, templates, prompts_key, image_column, label_column = self.sources
        try:
            self.class_names, self.templates = resolve_prompts(class_names, templates, prompts_key)
            self.samples = read_labelled_images(
                images, self.class_names, image_column, label_column
            )
        except ValueError as error:
            raise InputError(f"zero-shot set {self.name!r}: {error}") from error

        missing = [path for path, _ in self.samples if not path.is_file()]
        if missing:
            rank_zero_warn(
                f"zero-shot set {self.name!r}: {len(missing)} image file(s) missing, "
                f"e.g. {missing[0]}; they are left out of its metrics"
            )
            self.samples = [(path, label) for path, label in self.samples if path.is_file()]
        if not self.samples:
            raise InputError(f"zero-shot set {self.name!r}: no image file found")

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # read at setup, before any training step, so bad files stop the run early
        self.load()

    @torch.no_grad()
    def evaluate(self, pl_module: LightningModule, samples: list) -> dict[str, float]:
        """Scores `samples` with the module's towers; metrics are synced across devices."""
        self.load()
        weights = build_zeroshot_weights(
            split_across_ranks(pl_module.encode_captions), self.class_names, self.templates
        ).to(pl_module.device)  # (E, C)
        transform = build_transform(pl_module.image_data_config, train=False)
        loader = DataLoader(
            LabelledImageDataset(samples, transform),
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            collate_fn=collate_readable,
        )
        scores = zeroshot_metrics(len(self.class_names)).to(pl_module.device)

        skipped = 0
        for batch in loader:
            skipped += batch["skipped"]
            if batch["image"] is None:
                continue
            image_features = pl_module.model.encode_image(batch["image"].to(pl_module.device))
            logits = image_features.float() @ weights  # (B, C)
            scores.update(logits, batch["label"].to(pl_module.device))
        if skipped:
            rank_zero_warn(f"zero-shot {self.name}: skipped {skipped} unreadable image(s)")
        computed = scores.compute()
        self.confusion = computed.pop("confusion")
        return {key: value.item() for key, value in computed.items()}

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        results = self.evaluate(pl_module, shard(self.samples))
        for metric, value in results.items():
            # torchmetrics already synced the value across ranks
            pl_module.log(
                metrics.zeroshot_key(self.name, metric), value, batch_size=1, sync_dist=True
            )

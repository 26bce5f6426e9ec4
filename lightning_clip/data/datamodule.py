"""ImageTextDataModule: caption tables split by image into train and validation loaders."""

import logging
import os
import random
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader

from lightning_clip.data.datasets import BadSamplePolicy, CaptionCollate, CaptionDataset
from lightning_clip.data.formats.webdataset import WebDatasetLoader, build_webdataset_loader
from lightning_clip.data.records import ImageCaptions, ReadReport
from lightning_clip.data.sampling import ResumableLoader, ResumableSampler
from lightning_clip.data.sources import CaptionSource, read_source
from lightning_clip.data.tokenizer import CaptionTokenizer
from lightning_clip.data.transforms import CropShrink, build_transform, training_crop_shrink
from lightning_clip.errors import InputError, MissingInputError, require

log = logging.getLogger(__name__)


def split_by_image(
    records: list[ImageCaptions], val_fraction: float, seed: int
) -> tuple[list[ImageCaptions], list[ImageCaptions]]:
    """Shuffle images with `seed` and hold out `val_fraction` of them; no image is in both."""
    if val_fraction > 0 and len(records) < 2:
        raise InputError(
            f"data.val_fraction={val_fraction}: {len(records)} image(s) cannot be split into "
            "training and validation; add images, give data.val_file or set val_fraction 0"
        )
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    num_val = round(len(records) * val_fraction)
    # at least one image on each side
    num_val = min(max(num_val, 1 if val_fraction > 0 else 0), len(records) - 1)
    val = [records[index] for index in sorted(order[:num_val])]
    train = [records[index] for index in sorted(order[num_val:])]
    return train, val


class ImageTextDataModule(pl.LightningDataModule):
    """Image-caption pairs from caption datasets of any format, for training and retrieval."""

    def __init__(
        self,
        train_file: str | None = None,
        val_file: str | None = None,
        train_sources: list[CaptionSource] | None = None,
        val_sources: list[CaptionSource] | None = None,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        image_column: str = "image",
        caption_column: str = "caption",
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        pin_memory: bool = False,
        persistent_workers: bool = True,
        on_bad_sample: BadSamplePolicy = "skip",
        crop_scale: tuple[float, float] = (0.08, 1.0),
        hflip: float = 0.5,
        color_jitter: float = 0.0,
        shrink_jpeg_decode: bool = True,
        seed: int | None = None,
        tokenizer: Any = None,
        image_data_config: dict[str, Any] | None = None,
    ):
        """
        Args:
            train_file: CSV/TSV with one row per caption; image paths relative to the file.
                A shortcut for one `train_sources` entry.
            val_file: Validation table; without it (and without `val_sources`)
                `val_fraction` of each training source's images are held out.
            train_sources: Caption datasets of any format (CSV/TSV, JSONL, COCO captions
                JSON, image folders with sidecar text), mixed by their `weight`.
            val_sources: Validation datasets of any format.
            val_fraction: Share of images held out when there is no `val_file`.
            split_seed: Seed of the image-level train/validation split.
            image_column: Column of `train_file`/`val_file` holding the image path.
            caption_column: Column of `train_file`/`val_file` holding the caption text.
            batch_size: Training samples per device and step.
            eval_batch_size: Validation samples per device; defaults to `batch_size`.
            num_workers: Loader worker processes per device.
            pin_memory: Pin host memory for faster copies to an accelerator.
            persistent_workers: Keep workers alive between epochs.
            on_bad_sample: ``skip`` missing or unreadable images (counted, with a warning)
                or ``raise`` at the first one.
            crop_scale: Area range of the training random-resized crop.
            hflip: Probability of a horizontal flip in training (0 for text or digits).
            color_jitter: Strength of training colour jitter; 0 turns it off.
            shrink_jpeg_decode: Decode training JPEGs at 1/2, 1/4 or 1/8 of their size
                where even the smallest random crop still covers the model's input size
                (faster, and no crop is ever enlarged). Validation decodes at full size.
            seed: Seed of the training order and of each sample's random augmentation;
                by default the run's `seed_everything` value (0 without one). A resumed
                run keeps the seed of the checkpoint.
            tokenizer: Set from the model by the CLI; the text tower's caption tokenizer.
            image_data_config: Set from the model by the CLI; the image backbone's
                preprocessing (size, interpolation, mean, std).
        """
        super().__init__()
        self.save_hyperparameters(ignore=["tokenizer", "image_data_config"])
        self._check_values()

        self.tokenizer: CaptionTokenizer | None = tokenizer
        self.image_data_config = image_data_config
        self.train_records: list[ImageCaptions] = []
        self.val_records: list[ImageCaptions] = []
        self.train_mixture: list[tuple[int, float]] = []  # (images, weight) per source
        self.train_shards: CaptionSource | None = None  # a streamed WebDataset source
        self.missing_images: list[tuple[str, str]] = []  # ("training"/"validation", file)
        self.empty_captions = {"training": 0, "validation": 0}  # dropped while reading
        self._train_loader: ResumableLoader | None = None

        # read the tables now so a wrong path or column fails before any model is built
        self._read_tables()

    def _check_values(self) -> None:
        hp = self.hparams
        require(0 <= hp.val_fraction < 1, "data.val_fraction", hp.val_fraction, "in [0, 1)")
        require(
            hp.on_bad_sample in ("skip", "raise"), "data.on_bad_sample", hp.on_bad_sample,
            "'skip' or 'raise'",
        )  # fmt: skip
        # a batch of one has no negatives: its contrastive loss is always zero
        require(hp.batch_size >= 2, "data.batch_size", hp.batch_size, "at least 2")
        require(
            hp.eval_batch_size is None or hp.eval_batch_size >= 1, "data.eval_batch_size",
            hp.eval_batch_size, "null or at least 1",
        )  # fmt: skip
        require(hp.num_workers >= 0, "data.num_workers", hp.num_workers, "0 or more")
        low, high = hp.crop_scale
        require(0 < low <= high <= 1, "data.crop_scale", list(hp.crop_scale), "0 < min <= max <= 1")
        require(0 <= hp.hflip <= 1, "data.hflip", hp.hflip, "a probability in [0, 1]")
        require(hp.color_jitter >= 0, "data.color_jitter", hp.color_jitter, "0 or more")

    def _sources(self, file: str | None, sources: list[CaptionSource] | None, role: str):
        hp = self.hparams
        if file is not None and sources:
            raise InputError(f"data: give {role}_file or {role}_sources, not both")
        if file is not None:
            return [CaptionSource(file, image_key=hp.image_column, caption_key=hp.caption_column)]
        # from YAML a source may arrive as a plain mapping
        return [
            s if isinstance(s, CaptionSource) else CaptionSource(**dict(s)) for s in sources or []
        ]

    def _read(self, source: CaptionSource, role: str = "training") -> list[ImageCaptions]:
        report = ReadReport()
        records = read_source(source, report)
        self.empty_captions[role] += report.empty_captions
        path = source.path
        if report.empty_captions:
            rank_zero_warn(f"{path}: dropped {report.empty_captions} empty caption(s)")
        if report.uncaptioned_images:
            rank_zero_warn(
                f"{path}: left out {report.uncaptioned_images} image(s) without captions"
            )
        if report.multiline_captions:
            rank_zero_warn(
                f"{path}: {len(report.multiline_captions)} caption(s) span several lines, "
                f"first at {report.multiline_captions[0]}; an unclosed quote can cause this"
            )

        readable = [record for record in records if record.image_path.is_file()]
        missing = [record for record in records if not record.image_path.is_file()]
        self.missing_images += [(role, f"{r.image_path} ({r.source})") for r in missing]
        if missing:
            examples = ", ".join(f"{r.image_path} ({r.source})" for r in missing[:3])
            message = f"{path}: {len(missing)} image file(s) missing, e.g. {examples}"
            if self.hparams.on_bad_sample == "raise":
                raise MissingInputError(message)
            rank_zero_warn(message + "; skipping them (set on_bad_sample=raise to stop)")

        if not readable:
            raise InputError(f"{path}: no usable image-caption pairs")
        return readable

    def _read_tables(self) -> None:
        hp = self.hparams
        train_sources = self._sources(hp.train_file, hp.train_sources, "train")
        val_sources = self._sources(hp.val_file, hp.val_sources, "val")
        if not train_sources:
            raise InputError("data: no training data; set data.train_file or data.train_sources")
        if any(source.resolved_format() == "webdataset" for source in train_sources):
            self._use_shards(train_sources, val_sources)
            return

        for source in train_sources:
            records = self._read(source)
            if not val_sources:
                records, held_out = split_by_image(records, hp.val_fraction, hp.split_seed)
                self.val_records += held_out
            self.train_records += records
            self.train_mixture.append((len(records), source.weight))
        for source in val_sources:
            self.val_records += self._read(source, "validation")

        if len(self.train_records) < 2:
            raise InputError(
                f"{train_sources[0].path}: {len(self.train_records)} training image(s) after "
                "the validation split; contrastive training needs at least 2"
            )
        rank_zero_info(
            f"caption data: {len(self.train_records)} training images, "
            f"{len(self.val_records)} validation images"
        )

    def _use_shards(self, train_sources: list[CaptionSource], val_sources) -> None:
        if len(train_sources) > 1:
            raise NotImplementedError(
                "data.train_sources: a WebDataset source cannot be mixed with other sources yet; "
                "write them all into shards, or use one WebDataset source"
            )
        self.train_shards = train_sources[0]
        require(
            (self.train_shards.samples_per_epoch or 0) >= 1,
            "data.train_sources[0].samples_per_epoch", self.train_shards.samples_per_epoch,
            "a positive number for WebDataset shards (samples per epoch over all devices)",
        )  # fmt: skip
        # validation needs every caption of every image for retrieval: a map-style source
        for source in val_sources:
            self.val_records += self._read(source, "validation")
        if not self.val_records:
            rank_zero_warn(
                "training from WebDataset shards without val_file/val_sources: no validation"
            )

    def _check_linked(self) -> None:
        if self.tokenizer is None or self.image_data_config is None:
            raise RuntimeError(
                "ImageTextDataModule needs `tokenizer` and `image_data_config` from the model; "
                "train.py links them, elsewhere pass model.tokenizer and model.image_data_config"
            )

    def setup(self, stage: str) -> None:
        self._check_linked()
        policy = self.hparams.on_bad_sample
        train_transform = build_transform(
            self.image_data_config,
            train=True,
            scale=tuple(self.hparams.crop_scale),
            hflip=self.hparams.hflip,
            color_jitter=self.hparams.color_jitter,
        )
        eval_transform = build_transform(self.image_data_config, train=False)
        self.train_dataset = CaptionDataset(
            self.train_records,
            train_transform,
            train=True,
            on_bad_sample=policy,
            max_shrink=self._training_shrink(),
        )
        self.val_dataset = CaptionDataset(
            self.val_records, eval_transform, train=False, on_bad_sample=policy
        )

    def _training_shrink(self) -> CropShrink | None:
        if not self.hparams.shrink_jpeg_decode:
            return None
        return training_crop_shrink(self.image_data_config, tuple(self.hparams.crop_scale))

    @property
    def val_captions(self) -> tuple[list[str], list[int]]:
        """Every validation caption and the index of its image, for retrieval."""
        captions, image_index = [], []
        for index, record in enumerate(self.val_records):
            captions.extend(record.captions)
            image_index.extend([index] * len(record.captions))
        return captions, image_index

    def _loader_options(self) -> dict[str, Any]:
        workers = self.hparams.num_workers
        return {
            "collate_fn": CaptionCollate(self.tokenizer),
            "num_workers": workers,
            "pin_memory": self.hparams.pin_memory,
            "persistent_workers": self.hparams.persistent_workers and workers > 0,
            # workers' base seeds come from here, not from the main process's generator
            "generator": torch.Generator().manual_seed(self._seed()),
        }

    def _seed(self) -> int:
        if self.hparams.seed is not None:
            return self.hparams.seed
        return int(os.environ.get("PL_GLOBAL_SEED", 0))

    def train_dataloader(self) -> ResumableLoader | WebDatasetLoader:
        trainer = self.trainer
        world_size, rank = (trainer.world_size, trainer.global_rank) if trainer else (1, 0)
        if self.train_shards is not None:
            return self._shard_loader(world_size, rank)
        sampler = ResumableSampler(
            self.train_dataset, world_size, rank, self._seed(), mixture=self.train_mixture
        )
        batch_size = self.hparams.batch_size
        self._train_loader = ResumableLoader(
            self.train_dataset,
            sampler,
            batch_size=batch_size,
            # a partial last batch would give the loss fewer negatives than the rest
            drop_last=len(sampler) >= batch_size,
            **self._loader_options(),
        )
        return self._train_loader

    def _shard_loader(self, world_size: int, rank: int) -> WebDatasetLoader:
        source = self.train_shards
        return build_webdataset_loader(
            source.path,
            self.train_dataset.transform,
            self.tokenizer,
            batch_size=self.hparams.batch_size,
            samples_per_epoch=source.samples_per_epoch,
            world_size=world_size,
            rank=rank,
            num_workers=self.hparams.num_workers,
            seed=self._seed(),
            resampled=source.resampled,
            caption_key=source.caption_key or "txt",
            on_bad_sample=self.hparams.on_bad_sample,
            epoch_source=lambda: self.trainer.current_epoch if self.trainer else 0,
            max_shrink=self.train_dataset.max_shrink,
        )

    def val_dataloader(self) -> DataLoader:
        batch_size = self.hparams.eval_batch_size or self.hparams.batch_size
        return DataLoader(self.val_dataset, batch_size=batch_size, **self._loader_options())

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # batches reach this hook as training consumes them (after any prefetching), which is
        # the position a checkpoint must record
        if self._train_loader is not None and self.trainer is not None and self.trainer.training:
            self._train_loader.batch_consumed()
        return batch

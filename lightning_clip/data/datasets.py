"""Map-style datasets that load and transform images, and the collates that batch them."""

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch
from torch.utils.data import Dataset, default_collate

from lightning_clip.data.images import MaxShrink, load_rgb
from lightning_clip.data.records import ImageCaptions
from lightning_clip.data.sampling import SeededIndex, seeded
from lightning_clip.errors import BadImageError

BadSamplePolicy = Literal["skip", "raise"]


def load_image_or_none(path: Path, policy: BadSamplePolicy, max_shrink: MaxShrink | None = None):
    try:
        return load_rgb(path, max_shrink)
    except Exception as error:  # PIL raises many types for broken files
        if policy == "raise":
            raise BadImageError(f"{path}: cannot read image: {error}") from error
        warnings.warn(f"skipping unreadable image {path}: {error}", stacklevel=2)
        return None


class CaptionDataset(Dataset):
    """One item per image: {"image": (3, H, W), "caption": str, "index", "skipped"}.

    In training a caption is drawn at random each time an image is seen, and an unreadable
    image is replaced by a random other one so batches keep their size (every failed read
    adds one to `skipped`). In evaluation the first caption is used (retrieval reads all of
    them from `records`) and an unreadable image comes back as None, for `CaptionCollate`
    to drop, so no image is ever scored under another one's identity.

    Captions stay text here: `CaptionCollate` tokenises a whole batch in one call, which a
    fast tokenizer does in native code at a fraction of the cost of one call per caption.
    """

    MAX_ATTEMPTS = 20

    def __init__(
        self,
        records: list[ImageCaptions],
        transform: Callable,
        train: bool,
        on_bad_sample: BadSamplePolicy = "skip",
        max_shrink: MaxShrink | None = None,
    ):
        self.records = records
        self.transform = transform
        self.train = train
        self.on_bad_sample = on_bad_sample
        self.max_shrink = max_shrink  # lets JPEGs decode smaller (see `load_rgb`)

    def __len__(self) -> int:
        return len(self.records)

    def _caption(self, record: ImageCaptions) -> str:
        if not self.train:
            return record.captions[0]
        # reproducible: the sampler seeds every sample (torch also seeds every worker)
        choice = torch.randint(len(record.captions), (1,)).item()
        return record.captions[choice]

    def _item(self, index: int, image, skipped: int) -> dict:
        return {
            "image": None if image is None else self.transform(image),
            "caption": self._caption(self.records[index]),
            "index": index,
            "skipped": skipped,
        }

    def __getitem__(self, key: int | SeededIndex) -> dict:
        if isinstance(key, tuple):
            # a resumable sampler's (index, seed): this sample's random draws repeat exactly
            index, seed = key
            with seeded(seed):
                return self._load(index)
        return self._load(key)

    def _read(self, index: int):
        return load_image_or_none(
            self.records[index].image_path, self.on_bad_sample, self.max_shrink
        )

    def _load(self, index: int) -> dict:
        image = self._read(index)
        if image is not None or not self.train:
            return self._item(index, image, skipped=int(image is None))

        for attempt in range(1, self.MAX_ATTEMPTS + 1):
            index = torch.randint(len(self.records), (1,)).item()
            image = self._read(index)
            if image is not None:
                return self._item(index, image, skipped=attempt)
        raise BadImageError(
            f"{self.records[index].source}: {self.MAX_ATTEMPTS + 1} images in a row could not "
            "be read; check the image files of this table"
        )


def collate_readable(items: list[dict]) -> dict:
    """Stack the items whose image was read; `skipped` counts the others (a 0-d tensor)."""
    readable = [item for item in items if item["image"] is not None]
    batch = default_collate(readable) if readable else {"image": None}
    batch["skipped"] = torch.tensor(sum(item["skipped"] for item in items))
    return batch


def _without_caption(item: dict) -> dict:
    return {key: value for key, value in item.items() if key != "caption"}


class CaptionCollate:
    """`collate_readable` for captioned items, whose captions become (B, L) "text" tokens.

    The batch's captions go through the tokenizer in one call; with a `CaptionTokenizer` the
    batch also carries "truncated", how many of its captions were cut to the context length.
    """

    def __init__(self, tokenizer: Callable[[list[str]], torch.Tensor]):
        self.tokenizer = tokenizer

    def __call__(self, items: list[dict]) -> dict:
        captions = [item["caption"] for item in items if item["image"] is not None]
        batch = collate_readable([_without_caption(item) for item in items])
        if not captions:
            return batch

        if hasattr(self.tokenizer, "with_truncation_count"):
            batch["text"], truncated = self.tokenizer.with_truncation_count(captions)
            batch["truncated"] = torch.tensor(truncated)
        else:
            batch["text"] = self.tokenizer(captions)
        return batch


class LabelledImageDataset(Dataset):
    """(image path, class index) pairs -> {"image": (3, H, W), "label", "index", "skipped"}."""

    def __init__(
        self,
        samples: list[tuple[Path, int]],
        transform: Callable,
        on_bad_sample: BadSamplePolicy = "skip",
    ):
        self.samples = samples
        self.transform = transform
        self.on_bad_sample = on_bad_sample

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        path, label = self.samples[index]
        image = load_image_or_none(path, self.on_bad_sample)
        if image is None:
            return {"image": None, "label": label, "index": index, "skipped": 1}
        return {"image": self.transform(image), "label": label, "index": index, "skipped": 0}

"""WebDataset tar shards of image-caption pairs, streamed as batches like the map-style loader.

The `webdataset` library opens the shards (local paths, `pipe:` commands, the URLs its `gopen`
knows; fsspec opens any other URL) and groups tar members into samples. This module decides
which worker reads which shard, decodes each sample itself so that a broken one is skipped or
reported on its own, and batches with the same `CaptionCollate` as the map-style datasets.

There is no mid-epoch resume: an epoch that was interrupted starts its stream again.
"""

import hashlib
import io
import json
import random
import warnings
from collections.abc import Callable, Iterator, Sequence
from urllib.parse import urlparse

import fsspec
import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info
from webdataset.gopen import gopen, gopen_schemes

from lightning_clip.data.datasets import BadSamplePolicy, CaptionCollate
from lightning_clip.data.images import MaxShrink, load_rgb
from lightning_clip.data.sampling import sample_seed, seeded
from lightning_clip.errors import BadImageError, InputError, require

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


def expand_urls(urls: str | Sequence[str]) -> list[str]:
    """Brace patterns (`train-{000000..000009}.tar`) or lists of them -> one URL per shard."""
    patterns = [urls] if isinstance(urls, str) else list(urls)
    return [url for pattern in patterns for url in wds.shardlists.expand_urls(pattern)]


def sample_id(url: str, key: str) -> int:
    """A stable id below 2**63 (it fits an int64) for the sample `key` of the shard `url`."""
    digest = hashlib.blake2b(f"{url}\n{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def open_shard(url: str):
    """A binary stream of one shard: webdataset's opener for paths, `pipe:` and the schemes it
    knows; fsspec for any other URL (s3://, gs://, az://, memory://, ...)."""
    scheme = urlparse(url).scheme
    if scheme in ("", "file") or scheme in gopen_schemes:
        return gopen(url)
    return fsspec.open(url, "rb").open()


def _tar_samples(urls: list[str]) -> Iterator[dict]:
    """Tar members grouped into samples by key, one shard after another."""
    streams = ({"url": url, "stream": open_shard(url)} for url in urls)
    return wds.tariterators.group_by_keys(wds.tariterators.tar_file_expander(streams))


def _decode_image(data: bytes, max_shrink: MaxShrink | None) -> Image.Image:
    return load_rgb(io.BytesIO(data), max_shrink)


def _json_captions(text: str) -> list:
    record = json.loads(text)
    if isinstance(record, dict) and isinstance(record.get("captions"), list):
        return record["captions"]
    if isinstance(record, dict) and "caption" in record:
        return [record["caption"]]
    raise ValueError('the json holds neither "caption" nor a list "captions"')


class CaptionShards(IterableDataset):
    """This rank's and worker's samples as batch dicts; see `build_webdataset_loader`.

    Every worker of every rank orders the shard list the same way, from (seed, epoch), and
    takes its own slice of it, so no two readers share a shard within an epoch.
    """

    # a shard this broken is a data problem to fix, not noise to skip forever
    MAX_SKIPPED_PER_BATCH = 1000

    def __init__(
        self,
        urls: list[str],
        transform: Callable,
        tokenizer: Callable[[list[str]], torch.Tensor],
        batch_size: int,
        world_size: int,
        rank: int,
        seed: int,
        resampled: bool,
        shuffle_buffer: int,
        image_extensions: Sequence[str],
        caption_key: str,
        on_bad_sample: BadSamplePolicy,
        train: bool,
        max_shrink: MaxShrink | None,
    ):
        self.urls = urls
        self.transform = transform
        self.collate = CaptionCollate(tokenizer)
        self.max_shrink = max_shrink
        self.batch_size = batch_size
        self.world_size = world_size
        self.rank = rank
        self.seed = seed
        self.resampled = resampled
        self.shuffle_buffer = shuffle_buffer
        self.image_extensions = tuple(image_extensions)
        self.caption_key = caption_key
        self.on_bad_sample = on_bad_sample
        self.train = train
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _passes(self, worker: int, num_workers: int) -> Iterator[list[str]]:
        """This worker's shards, pass after pass in training, one pass in evaluation."""
        if self.resampled:
            # each reader draws on its own, so nothing needs to line up across readers
            draws = random.Random(f"shards/{self.seed}/{self.epoch}/{self.rank}/{worker}")
            while True:
                yield draws.choices(self.urls, k=len(self.urls))

        # the same order in every reader, so their slices of it never overlap
        urls = list(self.urls)
        if self.train:
            random.Random(f"shards/{self.seed}/{self.epoch}").shuffle(urls)
        own = urls[self.rank :: self.world_size][worker::num_workers]
        yield own
        if not self.train:
            return

        # a reader that needs more samples this epoch reads its own shards again
        order = random.Random(f"repeat/{self.seed}/{self.epoch}/{self.rank}/{worker}")
        while True:
            yield order.sample(own, len(own))

    def _samples(self, worker: int, num_workers: int) -> Iterator[dict]:
        for pass_index, urls in enumerate(self._passes(worker, num_workers)):
            samples = _tar_samples(urls)
            if self.train and self.shuffle_buffer > 1:
                # within one pass, so a reader repeats nothing before it has read all its shards;
                # raw bytes, since a buffer of encoded images is far smaller than of tensors
                order = f"samples/{self.seed}/{self.epoch}/{pass_index}/{self.rank}/{worker}"
                samples = wds.shuffle(self.shuffle_buffer, rng=random.Random(order))(samples)

            count = 0
            for sample in samples:
                count += 1
                yield sample
            if count == 0:
                # without this a training stream over empty shards would spin forever
                raise InputError(f"shards {urls}: no samples in any of them")

    def _image(self, sample: dict, where: str) -> Image.Image:
        extension = next((ext for ext in self.image_extensions if ext in sample), None)
        if extension is None:
            raise InputError(f"{where}: no image (looked for {list(self.image_extensions)})")
        try:
            return _decode_image(sample[extension], self.max_shrink)
        except Exception as error:  # PIL raises many types for broken files
            raise BadImageError(f"{where}: cannot decode the {extension} image: {error}") from error

    def _captions(self, sample: dict, where: str) -> list[str]:
        key = self.caption_key if self.caption_key in sample else "json"
        if key not in sample:
            looked_for = list(dict.fromkeys([self.caption_key, "json"]))
            raise InputError(f"{where}: no caption (looked for {looked_for})")
        try:
            text = sample[key].decode("utf-8")
            captions = _json_captions(text) if key.endswith("json") else [text]
        except ValueError as error:  # also bad UTF-8 and bad JSON
            raise InputError(f"{where}: unreadable {key} caption: {error}") from error

        captions = [caption for caption in captions if isinstance(caption, str) and caption.strip()]
        if not captions:
            raise InputError(f"{where}: empty caption")
        return captions

    def _item(self, sample: dict) -> dict:
        """One sample -> {"image": (3, H, W), "caption": str, "index", "skipped": 0}.

        A bad sample comes back as {"image": None, "skipped": 1} for the collate to drop.
        """
        url, key = sample["__url__"], sample["__key__"]
        where = f"shard {url}, sample {key!r}"
        try:
            image, captions = self._image(sample, where), self._captions(sample, where)
        except InputError as error:
            if self.on_bad_sample == "raise":
                raise
            warnings.warn(f"skipping a bad sample: {error}", stacklevel=2)
            return {"image": None, "skipped": 1}

        index = sample_id(url, key)
        if not self.train:
            return self._encode(image, captions[0], index)
        # the same crop, flip and caption whatever the worker count or buffer timing
        with seeded(sample_seed(self.seed, self.epoch, index)):
            caption = captions[torch.randint(len(captions), (1,)).item()]
            return self._encode(image, caption, index)

    def _encode(self, image: Image.Image, caption: str, index: int) -> dict:
        return {"image": self.transform(image), "caption": caption, "index": index, "skipped": 0}

    def _batches(self, items: Iterator[dict]) -> Iterator[dict]:
        """Batches of `batch_size` good items; the bad ones read meanwhile count in `skipped`.

        Training streams never end, so their batches are all full: the contrastive loss
        gathers equal-sized batches from every device. In evaluation each worker's stream
        ends with a partial batch.
        """
        pending, good = [], 0
        for item in items:
            pending.append(item)
            good += item["image"] is not None
            if good == self.batch_size:
                yield self.collate(pending)
                pending, good = [], 0
            elif len(pending) - good > self.MAX_SKIPPED_PER_BATCH:
                raise BadImageError(
                    f"over {self.MAX_SKIPPED_PER_BATCH} bad samples in a row; the warnings "
                    "name their shards"
                )
        if pending:
            yield self.collate(pending)

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, num_workers = (0, 1) if info is None else (info.id, info.num_workers)

        samples = self._samples(worker, num_workers)
        return self._batches(self._item(sample) for sample in samples)


class WebDatasetLoader(wds.WebLoader):
    """Batches from `CaptionShards`; in training exactly `len(self)` of them per epoch."""

    def __init__(
        self,
        shards: CaptionShards,
        num_workers: int,
        batches_per_epoch: int | None,
        epoch_source: Callable[[], int] | None = None,
    ):
        # the workers collate, so the DataLoader passes their batches through as they are;
        # workers are not persistent, so each epoch's workers copy the epoch set before it
        super().__init__(shards, batch_size=None, num_workers=num_workers)
        self.shards = shards
        self.epoch_source = epoch_source
        self.batches_per_epoch = batches_per_epoch
        if batches_per_epoch is not None:
            self.with_epoch(batches_per_epoch)

    def set_epoch(self, epoch: int) -> None:
        """Shuffle shards, samples and augmentations for `epoch`, from the next `iter` on.

        Lightning calls `set_epoch` on samplers only, so the owner of this loader calls it:
        when building it (a resumed run starts iterating before any epoch hook) and in
        `on_train_epoch_start`, which runs before the `iter` of every later epoch.
        """
        self.shards.set_epoch(epoch)

    def __iter__(self):
        # with an `epoch_source` (the trainer's epoch) every pass shuffles for its own epoch
        if self.epoch_source is not None:
            self.shards.set_epoch(self.epoch_source())
        return super().__iter__()

    def __len__(self) -> int:
        if self.batches_per_epoch is None:
            raise TypeError("an evaluation loader has no fixed length: it reads every sample once")
        return self.batches_per_epoch


def _require_enough_shards(shard_count: int, world_size: int, num_workers: int) -> None:
    readers = world_size * max(1, num_workers)
    if shard_count < readers:
        raise InputError(
            f"{shard_count} shards cannot give each of {world_size} ranks x "
            f"{max(1, num_workers)} workers = {readers} readers a shard of its own; write at "
            "least that many shards, use fewer workers, or set resampled=True"
        )


def build_webdataset_loader(
    urls: str | Sequence[str],
    transform: Callable,
    tokenizer: Callable[[list[str]], torch.Tensor],
    *,
    batch_size: int,
    samples_per_epoch: int | None = None,
    world_size: int = 1,
    rank: int = 0,
    num_workers: int = 0,
    seed: int = 0,
    resampled: bool = False,
    shuffle_buffer: int = 1000,
    image_extensions: Sequence[str] = IMAGE_EXTENSIONS,
    caption_key: str = "txt",
    on_bad_sample: BadSamplePolicy = "skip",
    train: bool = True,
    epoch_source: Callable[[], int] | None = None,
    max_shrink: MaxShrink | None = None,
) -> WebDatasetLoader:
    """A loader of {"image": (B, 3, H, W), "text": (B, L), "index": (B,), "skipped": ()}.

    In training every rank yields `samples_per_epoch // (batch_size * world_size)` full
    batches per epoch whatever `num_workers`, from shards split by rank and then by worker.
    With at least that many samples in each reader's shards no sample is read twice in an
    epoch; a reader that runs out starts another pass over its shards, so on its rank some
    samples then repeat within the epoch. Evaluation reads every sample once, in shard order,
    with its first caption; each worker's last batch may be partial.

    Args:
        urls: shard URLs or brace patterns, or a list of them.
        tokenizer: B captions -> (B, L) tokens, such as `CaptionTokenizer`.
        samples_per_epoch: over all ranks; needed in training only.
        world_size: given rather than read from torch.distributed, which may not be
            initialised yet when the loader is built.
        resampled: draw shards with replacement, independently in every reader.
        shuffle_buffer: samples held per worker for shuffling in training; 0 or 1 keeps order.
        image_extensions: tried in order; the first one a sample has is its image.
        caption_key: a text member, or a JSON one ending in "json" with {"caption": str} or
            {"captions": [str, ...]}; samples without it fall back to their "json" member.
        on_bad_sample: "skip" drops an unreadable or captionless sample with a warning and
            counts it in "skipped"; "raise" stops on it. Both name the shard and the key.
        epoch_source: called at every `iter`, e.g. the trainer's current epoch, so each epoch
            shuffles differently without anyone calling `set_epoch`.
        max_shrink: lets JPEGs decode smaller, as in `load_rgb`.
    """
    shard_urls = expand_urls(urls)
    require(len(shard_urls) > 0, "urls", urls, "at least one shard")
    require(batch_size >= 1, "batch_size", batch_size, "at least 1")
    require(on_bad_sample in ("skip", "raise"), "on_bad_sample", on_bad_sample, "skip or raise")
    require(train or not resampled, "resampled", resampled, "False in evaluation")
    require(world_size >= 1, "world_size", world_size, "at least 1")
    require(0 <= rank < world_size, "rank", rank, f"between 0 and {world_size - 1}")
    require(num_workers >= 0, "num_workers", num_workers, "0 or more")
    if not resampled:
        _require_enough_shards(len(shard_urls), world_size, num_workers)

    batches_per_epoch = None
    if train:
        global_batch = batch_size * world_size
        require(
            samples_per_epoch is not None and samples_per_epoch >= global_batch,
            "samples_per_epoch",
            samples_per_epoch,
            f"at least batch_size x world_size = {global_batch} in training",
        )
        batches_per_epoch = samples_per_epoch // global_batch

    shards = CaptionShards(
        shard_urls, transform, tokenizer, batch_size, world_size, rank, seed, resampled,
        shuffle_buffer, image_extensions, caption_key, on_bad_sample, train, max_shrink,
    )  # fmt: skip
    return WebDatasetLoader(shards, num_workers, batches_per_epoch, epoch_source)

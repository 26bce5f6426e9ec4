import io
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import webdataset as wds
from PIL import Image
from torch.testing import assert_close
from transformers import AutoTokenizer

from lightning_clip.data.formats.webdataset import (
    build_webdataset_loader,
    expand_urls,
    sample_id,
)
from lightning_clip.data.images import load_rgb
from lightning_clip.data.tokenizer import CaptionTokenizer
from lightning_clip.data.transforms import CropShrink, build_transform
from lightning_clip.errors import BadImageError, InputError
from tests.conftest import shared_data
from tests.data.test_datamodule import IMAGE_CONFIG

CONTEXT_LENGTH = 32
EVAL_TRANSFORM = build_transform(IMAGE_CONFIG, train=False)
TRAIN_TRANSFORM = build_transform(IMAGE_CONFIG, train=True)
SHARDS, PER_SHARD = 8, 6


@dataclass
class Shards:
    """Shards written from coco_captions_mini, and what each sample holds."""

    root: Path
    pattern: str
    paths: list[Path] = field(default_factory=list)
    samples: list[tuple[Path, str, dict]] = field(default_factory=list)  # (shard, key, record)

    def records_by_id(self, url_of=str) -> dict[int, dict]:
        return {sample_id(url_of(shard), key): record for shard, key, record in self.samples}


@pytest.fixture
def long_tokenizer(tokenizer_dir) -> CaptionTokenizer:
    """Like the data tests' `caption_tokenizer`, but long enough to tell captions apart."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    return CaptionTokenizer(tokenizer, CONTEXT_LENGTH)


def caption_member(shard_index: int, captions: list[str]) -> dict:
    """Three caption layouts in turn: txt, json with all captions, json with one."""
    if shard_index % 3 == 0:
        return {"txt": captions[0]}
    if shard_index % 3 == 1:
        return {"json": json.dumps({"captions": captions})}
    return {"json": json.dumps({"caption": captions[0]})}


@pytest.fixture(scope="module")
def coco_shards(tmp_path_factory) -> Shards:
    root = shared_data("coco_captions_mini")
    with (root / "annotations.jsonl").open() as handle:
        records = [json.loads(line) for line in handle][: SHARDS * PER_SHARD]

    folder = tmp_path_factory.mktemp("shards")
    shards = Shards(root, str(folder / f"shard-{{000000..{SHARDS - 1:06d}}}.tar"))
    for shard_index in range(SHARDS):
        path = folder / f"shard-{shard_index:06d}.tar"
        shards.paths.append(path)
        with wds.TarWriter(str(path)) as writer:
            for record in records[shard_index * PER_SHARD : (shard_index + 1) * PER_SHARD]:
                key = f"{record['image_id']:012d}"
                jpg = (root / record["file"]).read_bytes()
                writer.write(
                    {"__key__": key, "jpg": jpg, **caption_member(shard_index, record["captions"])}
                )
                shards.samples.append((path, key, record))
    return shards


def ids_and_batches(loader) -> tuple[list[int], list[dict]]:
    batches = list(loader)
    return [index for batch in batches for index in batch["index"].tolist()], batches


@pytest.mark.data
def test_evaluation_reads_every_sample_once_with_its_image_and_first_caption(
    coco_shards, long_tokenizer
):
    loader = build_webdataset_loader(
        coco_shards.pattern, EVAL_TRANSFORM, long_tokenizer, batch_size=5, train=False
    )
    records = coco_shards.records_by_id()

    ids, batches = ids_and_batches(loader)

    assert sorted(ids) == sorted(records)
    assert [len(batch["index"]) for batch in batches] == [5] * 9 + [3]
    for batch in batches:
        assert batch["image"].shape[1:] == (3, 32, 32)
        assert batch["text"].dtype == batch["index"].dtype == torch.int64
        assert batch["skipped"].shape == () and batch["skipped"].item() == 0
        for image, text, index in zip(
            batch["image"], batch["text"], batch["index"].tolist(), strict=True
        ):
            record = records[index]
            assert_close(text, long_tokenizer([record["captions"][0]])[0])
            assert_close(image, EVAL_TRANSFORM(load_rgb(coco_shards.root / record["file"])))
    with pytest.raises(TypeError, match="no fixed length"):
        len(loader)


@pytest.mark.data
def test_pipe_commands_read_the_same_samples_as_paths(coco_shards, long_tokenizer):
    pipes = [f"pipe:cat {shlex.quote(str(path))}" for path in coco_shards.paths]
    loader = build_webdataset_loader(
        pipes, EVAL_TRANSFORM, long_tokenizer, batch_size=16, train=False
    )
    records = coco_shards.records_by_id(lambda shard: f"pipe:cat {shlex.quote(str(shard))}")

    ids, batches = ids_and_batches(loader)

    assert sorted(ids) == sorted(records)
    texts = torch.cat([batch["text"] for batch in batches])
    expected = long_tokenizer([records[index]["captions"][0] for index in ids])
    assert_close(texts, expected)


@pytest.mark.data
def test_shards_decode_jpegs_as_small_as_the_shrink_allows(coco_shards, long_tokenizer):
    shrink = CropShrink((32, 32), min_scale=0.08)
    loader = build_webdataset_loader(
        coco_shards.pattern, EVAL_TRANSFORM, long_tokenizer, batch_size=16, train=False,
        max_shrink=shrink,
    )  # fmt: skip
    records = coco_shards.records_by_id()

    changed = 0
    for batch in loader:
        for image, index in zip(batch["image"], batch["index"].tolist(), strict=True):
            path = coco_shards.root / records[index]["file"]
            assert_close(image, EVAL_TRANSFORM(load_rgb(path, shrink)))
            changed += not torch.equal(image, EVAL_TRANSFORM(load_rgb(path)))
    assert changed >= len(records) // 2  # 640 px photos decode at 1/4 for 32 px crops


def test_brace_patterns_and_lists_of_them_expand_in_order():
    assert expand_urls("a/s-{00..02}.tar") == ["a/s-00.tar", "a/s-01.tar", "a/s-02.tar"]
    assert expand_urls(["s-{0..1}.tar", "pipe:cat t.tar"]) == [
        "s-0.tar",
        "s-1.tar",
        "pipe:cat t.tar",
    ]


def test_sample_ids_are_stable_int64_values_that_depend_on_shard_and_key():
    first = sample_id("shard-000000.tar", "000000000790")
    assert first == sample_id("shard-000000.tar", "000000000790")
    assert 0 <= first < 2**63
    assert first != sample_id("shard-000001.tar", "000000000790")
    assert first != sample_id("shard-000000.tar", "000000000791")


@pytest.mark.data
def test_two_ranks_of_two_workers_read_every_sample_once_in_an_epoch(coco_shards, long_tokenizer):
    per_rank = []
    for rank in range(2):
        loader = build_webdataset_loader(
            coco_shards.pattern, TRAIN_TRANSFORM, long_tokenizer,
            batch_size=4, samples_per_epoch=SHARDS * PER_SHARD, world_size=2, rank=rank,
            num_workers=2, shuffle_buffer=5,
        )  # fmt: skip
        ids, batches = ids_and_batches(loader)
        assert len(batches) == len(loader) == SHARDS * PER_SHARD // (4 * 2)
        assert all(batch["image"].shape == (4, 3, 32, 32) for batch in batches)
        per_rank.append(ids)

    every_id = per_rank[0] + per_rank[1]
    assert len(every_id) == len(set(every_id)) == SHARDS * PER_SHARD
    assert set(every_id) == set(coco_shards.records_by_id())


@pytest.mark.data
@pytest.mark.parametrize("num_workers", [0, 2])
def test_epoch_length_is_set_by_samples_per_epoch_whatever_the_workers(
    num_workers, coco_shards, long_tokenizer
):
    # 60 samples a rank from 24 on its shards: its readers go round again within the epoch
    loader = build_webdataset_loader(
        coco_shards.pattern, TRAIN_TRANSFORM, long_tokenizer,
        batch_size=4, samples_per_epoch=120, world_size=2, rank=1, num_workers=num_workers,
    )  # fmt: skip

    ids, batches = ids_and_batches(loader)

    assert len(batches) == len(loader) == 15
    assert all(len(batch["index"]) == 4 for batch in batches)
    # every reader reads all its shards before it repeats one
    assert len(set(ids[:24])) == 24
    assert set(ids) == set(ids[:24])


@pytest.mark.data
def test_resampled_shards_give_the_requested_batches_from_too_few_shards(
    coco_shards, long_tokenizer
):
    one_shard = str(coco_shards.paths[0])
    loader = build_webdataset_loader(
        one_shard, TRAIN_TRANSFORM, long_tokenizer,
        batch_size=4, samples_per_epoch=40, world_size=2, rank=1, resampled=True,
    )  # fmt: skip

    ids, batches = ids_and_batches(loader)

    assert len(batches) == len(loader) == 5
    assert len(ids) == 20
    shard_ids = {sample_id(one_shard, key) for _, key, _ in coco_shards.samples}
    assert set(ids) <= shard_ids


@pytest.mark.data
@pytest.mark.parametrize("shuffled", ["shards", "samples"])
def test_order_and_augmentation_change_with_the_epoch_and_repeat_for_the_same_seed(
    shuffled, coco_shards, long_tokenizer
):
    # each shuffle on its own: shard order over all shards, the buffer within one shard
    urls = coco_shards.pattern if shuffled == "shards" else str(coco_shards.paths[0])
    buffer, samples = (0, SHARDS * PER_SHARD) if shuffled == "shards" else (20, PER_SHARD)

    def epoch(seed: int, number: int) -> tuple[list[int], torch.Tensor]:
        loader = build_webdataset_loader(
            urls, TRAIN_TRANSFORM, long_tokenizer,
            batch_size=2, samples_per_epoch=samples, seed=seed, shuffle_buffer=buffer,
        )  # fmt: skip
        loader.set_epoch(number)
        ids, batches = ids_and_batches(loader)
        images = torch.cat([batch["image"] for batch in batches])
        return ids, images[torch.tensor(ids).argsort()]  # in id order, to compare samples

    first_ids, first_images = epoch(seed=0, number=0)
    second_ids, second_images = epoch(seed=0, number=1)
    again_ids, again_images = epoch(seed=0, number=1)
    other_seed_ids, _ = epoch(seed=1, number=1)

    assert sorted(first_ids) == sorted(second_ids) and len(set(first_ids)) == samples
    assert first_ids != second_ids
    assert not torch.equal(first_images, second_images)
    assert again_ids == second_ids
    assert_close(again_images, second_images)
    assert other_seed_ids != second_ids


@pytest.mark.data
def test_training_draws_one_of_the_json_captions_and_redraws_each_epoch(
    coco_shards, long_tokenizer
):
    loader = build_webdataset_loader(
        str(coco_shards.paths[1]), TRAIN_TRANSFORM, long_tokenizer,
        batch_size=PER_SHARD, samples_per_epoch=PER_SHARD,
    )  # fmt: skip
    records = coco_shards.records_by_id()

    texts = []
    for number in range(2):
        loader.set_epoch(number)
        (batch,) = list(loader)
        order = batch["index"].argsort()
        texts.append(batch["text"][order])
        for text, index in zip(batch["text"], batch["index"].tolist(), strict=True):
            options = long_tokenizer(records[index]["captions"])
            assert (options == text).all(dim=1).any()

    assert not torch.equal(texts[0], texts[1])


def image_bytes(image_format: str, size: int = 48) -> bytes:
    """A noisy picture, so a JPEG of it has enough data to truncate inside the scan."""
    generator = torch.Generator().manual_seed(size)
    pixels = torch.randint(0, 256, (size, size, 3), generator=generator, dtype=torch.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels.numpy()).save(buffer, format=image_format)
    return buffer.getvalue()


JPEG = image_bytes("JPEG")
BAD_SAMPLES = {
    "truncated": ({"jpg": JPEG[: len(JPEG) * 2 // 3], "txt": "cut"}, BadImageError),
    "garbage": ({"jpg": b"not an image at all", "txt": "noise"}, BadImageError),
    "no-caption": ({"jpg": JPEG}, InputError),
    "empty-caption": ({"jpg": JPEG, "txt": "  \n"}, InputError),
    "empty-json": ({"png": image_bytes("PNG"), "json": '{"captions": ["", " "]}'}, InputError),
    "no-image": ({"txt": "a caption without a picture"}, InputError),
}


def write_shard(path: Path, samples: list[tuple[str, dict]]) -> str:
    with wds.TarWriter(str(path)) as writer:
        for key, members in samples:
            writer.write({"__key__": key, **members})
    return str(path)


@pytest.fixture
def mixed_shard(tmp_path) -> str:
    """Four good samples, the last one after every bad one."""
    good = [(f"good-{index}", {"jpg": JPEG, "txt": f"good {index}"}) for index in range(4)]
    bad = [(key, members) for key, (members, _) in BAD_SAMPLES.items()]
    return write_shard(tmp_path / "mixed.tar", good[:2] + bad[:3] + good[2:3] + bad[3:] + good[3:])


def test_bad_samples_are_skipped_counted_and_named_in_evaluation(mixed_shard, long_tokenizer):
    loader = build_webdataset_loader(
        mixed_shard, EVAL_TRANSFORM, long_tokenizer, batch_size=16, train=False
    )

    with pytest.warns(UserWarning) as caught:
        (batch,) = list(loader)

    assert batch["image"].shape == (4, 3, 32, 32)
    assert batch["skipped"].item() == len(BAD_SAMPLES)
    messages = [str(warning.message) for warning in caught if "skipping" in str(warning.message)]
    assert len(messages) == len(BAD_SAMPLES)
    for key, message in zip(BAD_SAMPLES, messages, strict=True):
        assert f"shard {mixed_shard}, sample {key!r}" in message


def test_training_batches_stay_full_and_count_the_bad_samples_they_passed(
    mixed_shard, long_tokenizer
):
    loader = build_webdataset_loader(
        mixed_shard, TRAIN_TRANSFORM, long_tokenizer,
        batch_size=2, samples_per_epoch=4, shuffle_buffer=0,
    )  # fmt: skip

    with pytest.warns(UserWarning, match="skipping a bad sample"):
        batches = list(loader)

    assert [len(batch["index"]) for batch in batches] == [2, 2]
    assert [batch["skipped"].item() for batch in batches] == [0, len(BAD_SAMPLES)]


@pytest.mark.parametrize("key", list(BAD_SAMPLES))
def test_raise_mode_names_the_shard_and_the_key(key, tmp_path, long_tokenizer):
    members, error = BAD_SAMPLES[key]
    shard = write_shard(
        tmp_path / "one-bad.tar", [("fine", {"jpg": JPEG, "txt": "ok"}), (key, members)]
    )
    loader = build_webdataset_loader(
        shard, EVAL_TRANSFORM, long_tokenizer, batch_size=4, train=False, on_bad_sample="raise"
    )

    with pytest.raises(error, match=re.escape(f"shard {shard}, sample {key!r}")) as raised:
        list(loader)
    assert raised.type is error


@pytest.mark.parametrize(
    ("world_size", "num_workers", "expected"),
    [(2, 2, "3 shards cannot give each of 2 ranks x 2 workers = 4 readers"),
     (4, 0, "3 shards cannot give each of 4 ranks x 1 workers = 4 readers")],
)  # fmt: skip
def test_fewer_shards_than_readers_is_an_input_error_naming_the_counts(
    world_size, num_workers, expected, long_tokenizer
):
    with pytest.raises(InputError, match=re.escape(expected)):
        build_webdataset_loader(
            "missing/shard-{0..2}.tar", TRAIN_TRANSFORM, long_tokenizer,
            batch_size=2, samples_per_epoch=64, world_size=world_size, num_workers=num_workers,
        )  # fmt: skip


def solid(colour: tuple[int, int, int], image_format: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), colour).save(buffer, format=image_format)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("image_extensions", "caption_key", "channel", "caption"),
    [(("jpg", "png"), "txt", 0, "red from txt"), (("png", "jpg"), "alt.txt", 2, "blue alt")],
)
def test_image_and_caption_members_are_the_configured_ones(
    image_extensions, caption_key, channel, caption, tmp_path, long_tokenizer
):
    shard = write_shard(
        tmp_path / "both.tar",
        [("both", {"jpg": solid((255, 0, 0), "JPEG"), "png": solid((0, 0, 255), "PNG"),
                   "txt": "red from txt", "alt.txt": "blue alt"})],
    )  # fmt: skip
    loader = build_webdataset_loader(
        shard, EVAL_TRANSFORM, long_tokenizer, batch_size=1, train=False,
        image_extensions=image_extensions, caption_key=caption_key,
    )  # fmt: skip

    (batch,) = list(loader)

    # mean and std 0.5: a full channel is 1 after normalising, an empty one -1
    assert batch["image"][0].mean(dim=(1, 2)).argmax().item() == channel
    assert_close(batch["text"], long_tokenizer([caption]))


@pytest.mark.data
def test_train_py_fits_from_shards_with_the_same_steps_each_epoch(
    coco_shards, tmp_path, digits_root
):
    from lightning_clip.cli import cli_main
    from tests.test_cli import _tiny_args

    sources = [{"path": coco_shards.pattern, "samples_per_epoch": 32}]
    args = _tiny_args(tmp_path, digits_root) + [
        "--data.train_file", "null",
        "--data.train_sources", json.dumps(sources),
        "--data.val_file", str(digits_root / "captions.csv"),
        "--data.batch_size", "8",
        "--trainer.max_epochs", "2",
        "--trainer.limit_val_batches", "1",
    ]  # fmt: skip
    cli = cli_main(["fit", *args])
    assert cli.trainer.num_training_batches == 4  # 32 samples / 8 per batch
    assert cli.trainer.global_step == 8
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])


@pytest.mark.data
def test_fsspec_urls_read_the_same_samples_as_paths(coco_shards, long_tokenizer):
    import fsspec

    # fsspec's in-memory file system: a URL scheme webdataset does not know, without a network
    memory = fsspec.filesystem("memory")
    urls = []
    for path in coco_shards.paths:
        url = f"memory://lightning-clip-test/{path.name}"
        memory.pipe(url, path.read_bytes())
        urls.append(url)
    loader = build_webdataset_loader(
        urls, EVAL_TRANSFORM, long_tokenizer, batch_size=16, train=False
    )
    ids, _ = ids_and_batches(loader)
    assert sorted(ids) == sorted(
        coco_shards.records_by_id(lambda shard: f"memory://lightning-clip-test/{Path(shard).name}")
    )

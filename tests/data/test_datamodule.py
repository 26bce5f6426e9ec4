import re
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.testing import assert_close

from lightning_clip.data.datamodule import ImageTextDataModule, split_by_image
from lightning_clip.data.records import ImageCaptions
from lightning_clip.data.transforms import CropShrink
from tests.data.conftest import CONTEXT_LENGTH

IMAGE_CONFIG = {
    "input_size": (3, 32, 32),
    "interpolation": "bicubic",
    "mean": (0.5, 0.5, 0.5),
    "std": (0.5, 0.5, 0.5),
    "crop_pct": 1.0,
}
COLOURS = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "white": (255, 255, 255),
    "black": (0, 0, 0),
}


def make_images(folder: Path, count: int) -> list[str]:
    """`count` solid 12x8 PNGs named img00.png...; returns their names."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for index in range(count):
        name = f"img{index:02d}.png"
        Image.new("RGB", (12, 8), (index * 10, 100, 200)).save(folder / name)
        names.append(name)
    return names


def write_table(path: Path, rows: list[tuple[str, str]]) -> str:
    lines = ["image,caption"] + [f"{image},{caption}" for image, caption in rows]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def two_captions_each(names: list[str]) -> list[tuple[str, str]]:
    return [(name, f"{kind} {name[3:5]}") for name in names for kind in ("one", "two")]


def make_datamodule(train_file: str, tokenizer, **overrides) -> ImageTextDataModule:
    kwargs = {
        "train_file": train_file,
        "batch_size": 4,
        "num_workers": 0,
        "tokenizer": tokenizer,
        "image_data_config": IMAGE_CONFIG,
    }
    return ImageTextDataModule(**{**kwargs, **overrides})


def fake_records(count: int) -> list[ImageCaptions]:
    return [ImageCaptions(Path(f"/data/{index}.png"), [str(index)], "") for index in range(count)]


def test_split_by_image_is_disjoint_covers_all_and_keeps_order():
    records = fake_records(20)

    train, val = split_by_image(records, val_fraction=0.25, seed=0)

    assert len(val) == 5 and len(train) == 15
    train_paths = [record.image_path for record in train]
    val_paths = [record.image_path for record in val]
    assert not set(train_paths) & set(val_paths)
    assert sorted(train_paths + val_paths) == sorted(record.image_path for record in records)
    # each side keeps the table's order
    assert train == sorted(train, key=records.index)
    assert val == sorted(val, key=records.index)


def test_split_by_image_is_deterministic_given_the_seed():
    records = fake_records(20)
    first = split_by_image(records, 0.25, seed=3)
    again = split_by_image(records, 0.25, seed=3)
    other = split_by_image(records, 0.25, seed=4)

    assert first == again
    assert first[1] != other[1]


def test_split_by_image_holds_out_at_least_one_image_and_none_at_zero():
    assert len(split_by_image(fake_records(3), 0.1, seed=0)[1]) == 1
    train, val = split_by_image(fake_records(3), 0.0, seed=0)
    assert len(train) == 3 and val == []


@pytest.mark.parametrize(("count", "val_fraction"), [(1, 0.1), (4, 0.9)])
def test_split_never_silently_leaves_training_empty(
    count, val_fraction, tmp_path, caption_tokenizer
):
    table = write_table(tmp_path / "train.csv", two_captions_each(make_images(tmp_path, count)))
    try:
        datamodule = make_datamodule(table, caption_tokenizer, val_fraction=val_fraction)
    except ValueError:
        return  # refusing the split up front is as good as keeping a training image
    assert datamodule.train_records


def test_datamodule_split_is_by_image_and_reproducible(tmp_path, caption_tokenizer):
    table = write_table(tmp_path / "train.csv", two_captions_each(make_images(tmp_path, 10)))

    first = make_datamodule(table, caption_tokenizer, val_fraction=0.3, split_seed=7)
    again = make_datamodule(table, caption_tokenizer, val_fraction=0.3, split_seed=7)

    train_paths = {record.image_path for record in first.train_records}
    val_paths = {record.image_path for record in first.val_records}
    assert len(train_paths) == 7 and len(val_paths) == 3
    assert not train_paths & val_paths
    assert train_paths | val_paths == {(tmp_path / f"img{i:02d}.png").resolve() for i in range(10)}
    assert [r.image_path for r in again.val_records] == [r.image_path for r in first.val_records]
    # both captions of an image travel with it
    assert all(len(record.captions) == 2 for record in first.val_records)


@pytest.mark.parametrize("shrink_jpeg_decode", [True, False])
def test_only_training_jpegs_may_decode_smaller(tmp_path, caption_tokenizer, shrink_jpeg_decode):
    table = write_table(tmp_path / "train.csv", two_captions_each(make_images(tmp_path, 10)))
    datamodule = make_datamodule(
        table, caption_tokenizer, crop_scale=(0.25, 1.0), shrink_jpeg_decode=shrink_jpeg_decode
    )

    datamodule.setup("fit")

    expected = CropShrink((32, 32), min_scale=0.25) if shrink_jpeg_decode else None
    assert datamodule.train_dataset.max_shrink == expected
    assert datamodule.val_dataset.max_shrink is None


def test_missing_image_is_skipped_with_a_warning_giving_the_count(tmp_path, caption_tokenizer):
    names = make_images(tmp_path, 4)
    rows = two_captions_each(names) + [("gone.png", "lost"), ("gone2.png", "also lost")]
    table = write_table(tmp_path / "train.csv", rows)
    val_table = write_table(tmp_path / "val.csv", [(names[0], "val")])

    with pytest.warns(UserWarning, match=r"2 image file\(s\) missing.*gone\.png"):
        datamodule = make_datamodule(table, caption_tokenizer, val_file=val_table)

    assert [record.image_path.name for record in datamodule.train_records] == names
    assert [record.image_path.name for record in datamodule.val_records] == [names[0]]


def test_missing_image_raises_naming_the_file(tmp_path, caption_tokenizer):
    rows = two_captions_each(make_images(tmp_path, 2)) + [("gone.png", "lost")]
    table = write_table(tmp_path / "train.csv", rows)

    with pytest.raises(FileNotFoundError, match=r"1 image file\(s\) missing.*gone\.png"):
        make_datamodule(table, caption_tokenizer, on_bad_sample="raise")


def test_table_with_no_existing_image_is_rejected(tmp_path, caption_tokenizer):
    table = write_table(tmp_path / "train.csv", [("gone.png", "lost")])
    with pytest.warns(UserWarning, match="missing"), pytest.raises(ValueError, match="no usable"):
        make_datamodule(table, caption_tokenizer)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [({"val_fraction": 1.0}, "val_fraction"), ({"on_bad_sample": "ignore"}, "on_bad_sample")],
)
def test_bad_settings_are_rejected(overrides, key, tmp_path, caption_tokenizer):
    table = write_table(tmp_path / "train.csv", two_captions_each(make_images(tmp_path, 2)))
    with pytest.raises(ValueError, match=key):
        make_datamodule(table, caption_tokenizer, **overrides)


def corrupt_setup(tmp_path, tokenizer, policy: str) -> ImageTextDataModule:
    names = make_images(tmp_path, 4)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    train = write_table(tmp_path / "train.csv", two_captions_each(names))
    val = write_table(
        tmp_path / "val.csv", [("bad.png", "broken"), (names[1], "b"), (names[2], "c")]
    )
    datamodule = make_datamodule(
        train, tokenizer, val_file=val, eval_batch_size=3, on_bad_sample=policy
    )
    datamodule.setup("fit")
    return datamodule


def test_unreadable_validation_image_is_dropped_and_counted(tmp_path, caption_tokenizer):
    datamodule = corrupt_setup(tmp_path, caption_tokenizer, "skip")

    with pytest.warns(UserWarning, match="bad.png"):
        item = datamodule.val_dataset[0]
    assert item["skipped"] == 1 and item["image"] is None

    # no other image stands in for it, so retrieval never scores it under a wrong identity
    with pytest.warns(UserWarning, match="bad.png"):
        batch = next(iter(datamodule.val_dataloader()))
    assert batch["skipped"].item() == 1
    assert batch["index"].tolist() == [1, 2]
    assert batch["image"].shape[0] == 2


def test_unreadable_training_image_is_replaced_by_a_readable_one(tmp_path, caption_tokenizer):
    names = make_images(tmp_path, 4)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    train = write_table(tmp_path / "train.csv", two_captions_each(["bad.png", *names]))
    datamodule = make_datamodule(train, caption_tokenizer, val_fraction=0.0)
    datamodule.setup("fit")
    dataset = datamodule.train_dataset
    bad = next(i for i, r in enumerate(dataset.records) if r.image_path.name == "bad.png")

    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="bad.png"):
        item = dataset[bad]
    assert item["skipped"] >= 1
    assert item["index"] != bad
    assert dataset.records[item["index"]].image_path.name != "bad.png"


def test_unreadable_image_raises_naming_the_file(tmp_path, caption_tokenizer):
    datamodule = corrupt_setup(tmp_path, caption_tokenizer, "raise")

    with pytest.raises(ValueError, match=re.escape(str((tmp_path / "bad.png").resolve()))):
        datamodule.val_dataset[0]
    with pytest.raises(ValueError, match="bad.png"):
        next(iter(datamodule.val_dataloader()))


def test_val_captions_lists_every_caption_with_its_image_index(tmp_path, caption_tokenizer):
    names = make_images(tmp_path, 3)
    train = write_table(tmp_path / "train.csv", two_captions_each(names))
    val = write_table(
        tmp_path / "val.csv",
        [(names[2], "c first"), (names[0], "a only"), (names[2], "c second"), (names[1], "b")],
    )

    datamodule = make_datamodule(train, caption_tokenizer, val_file=val)

    captions, image_index = datamodule.val_captions
    assert captions == ["c first", "c second", "a only", "b"]
    assert image_index == [0, 0, 1, 2]
    assert [r.image_path.name for r in datamodule.val_records] == [names[2], names[0], names[1]]


def test_val_captions_follow_the_split(tmp_path, caption_tokenizer):
    table = write_table(tmp_path / "train.csv", two_captions_each(make_images(tmp_path, 10)))
    datamodule = make_datamodule(table, caption_tokenizer, val_fraction=0.3)

    captions, image_index = datamodule.val_captions

    assert len(captions) == 6
    for caption, index in zip(captions, image_index, strict=True):
        assert caption in datamodule.val_records[index].captions


@pytest.mark.parametrize("size", [32, 24])
def test_loaders_yield_image_and_text_batches(size, tmp_path, caption_tokenizer):
    table = write_table(tmp_path / "train.csv", two_captions_each(make_images(tmp_path, 15)))
    config = {**IMAGE_CONFIG, "input_size": (3, size, size)}
    datamodule = make_datamodule(
        table, caption_tokenizer, val_fraction=0.34, eval_batch_size=3, image_data_config=config
    )
    datamodule.setup("fit")

    train_batches = list(datamodule.train_dataloader())
    val_batches = list(datamodule.val_dataloader())

    # 10 training images in batches of 4: the partial last batch is dropped
    assert [len(batch["image"]) for batch in train_batches] == [4, 4]
    assert [len(batch["image"]) for batch in val_batches] == [3, 2]
    for batch in train_batches + val_batches:
        count = len(batch["image"])
        assert batch["image"].shape == (count, 3, size, size)
        assert batch["image"].dtype == torch.float32
        assert batch["text"].shape == (count, CONTEXT_LENGTH)
        assert batch["text"].dtype == torch.long


def test_training_text_is_one_of_that_images_captions(tmp_path, caption_tokenizer):
    table = write_table(tmp_path / "train.csv", two_captions_each(make_images(tmp_path, 8)))
    datamodule = make_datamodule(table, caption_tokenizer, val_fraction=0.0, batch_size=8)
    datamodule.setup("fit")

    batch = next(iter(datamodule.train_dataloader()))

    assert sorted(batch["index"].tolist()) == list(range(8))
    for text, index in zip(batch["text"], batch["index"], strict=True):
        options = caption_tokenizer(datamodule.train_records[index].captions)
        assert any(torch.equal(text, option) for option in options)


def test_validation_batch_holds_normalised_pixels_and_first_captions(tmp_path, caption_tokenizer):
    for name, colour in COLOURS.items():
        Image.new("RGB", (12, 8), colour).save(tmp_path / f"{name}.png")
    rows = [(f"{name}.png", f"{name} square") for name in COLOURS]
    train = write_table(tmp_path / "train.csv", rows)
    val = write_table(tmp_path / "val.csv", rows + [("red.png", "second red caption")])
    datamodule = make_datamodule(train, caption_tokenizer, val_file=val, eval_batch_size=8)
    datamodule.setup("validate")

    batch = next(iter(datamodule.val_dataloader()))

    # mean 0.5 and std 0.5 map 0 to -1 and 255 to +1
    expected = torch.tensor(list(COLOURS.values())).float() / 255 * 2 - 1  # (B, 3)
    assert_close(batch["image"].mean(dim=(2, 3)), expected, atol=1e-3, rtol=0)
    assert_close(batch["image"].amax(dim=(2, 3)), expected, atol=1e-3, rtol=0)
    assert torch.equal(batch["text"], caption_tokenizer([f"{name} square" for name in COLOURS]))


def test_setup_without_model_links_explains_what_is_missing(tmp_path, caption_tokenizer):
    table = write_table(tmp_path / "train.csv", two_captions_each(make_images(tmp_path, 3)))
    datamodule = make_datamodule(table, None, image_data_config=None)
    with pytest.raises(RuntimeError, match="tokenizer"):
        datamodule.setup("fit")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("batch_size", 1),
        ("eval_batch_size", 0),
        ("num_workers", -1),
        ("crop_scale", (1.5, 0.2)),
        ("hflip", 2.0),
        ("color_jitter", -1.0),
    ],
)
def test_out_of_range_values_are_rejected_naming_the_key(key, value, tmp_path, caption_tokenizer):
    table = write_table(tmp_path / "train.csv", two_captions_each(make_images(tmp_path, 4)))
    with pytest.raises(ValueError, match=rf"data\.{key}=.* is not allowed"):
        make_datamodule(table, caption_tokenizer, **{key: value})


def test_too_few_training_images_is_an_error(tmp_path, caption_tokenizer):
    table = write_table(tmp_path / "train.csv", two_captions_each(make_images(tmp_path, 4)))
    with pytest.raises(ValueError, match="1 training image\\(s\\) after the validation split"):
        make_datamodule(table, caption_tokenizer, val_fraction=0.9)


def test_training_batches_count_truncated_captions(tmp_path, caption_tokenizer):
    names = make_images(tmp_path, 4)
    long = "a very long caption " * 5  # far beyond the 8 tokens of the test tokenizer
    table = write_table(
        tmp_path / "t.csv", [(n, long if i % 2 else "ab") for i, n in enumerate(names)]
    )
    datamodule = make_datamodule(table, caption_tokenizer, val_fraction=0)
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["truncated"].item() == 2

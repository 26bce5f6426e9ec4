"""Checkpoint evaluation: bad checkpoints, unreadable gallery images, early set validation."""

import pytest
import torch
from PIL import Image

from lightning_clip.errors import InputError, MissingInputError
from lightning_clip.evaluate import (
    RetrievalSet,
    ZeroShotSet,
    evaluate_retrieval,
    load_module,
    read_retrieval_set,
    zeroshot_evaluator,
)


def _gallery(tmp_path, colours, corrupt=()):
    rows = ["image,caption"]
    for index, colour in enumerate(colours):
        name = f"{index}.png"
        if index in corrupt:
            (tmp_path / name).write_bytes(b"not an image")
        else:
            Image.new("RGB", (32, 32), colour).save(tmp_path / name)
        rows += [f"{name},caption {index} a", f"{name},caption {index} b"]
    (tmp_path / "captions.csv").write_text("\n".join(rows) + "\n")
    return RetrievalSet(name="toy", captions=str(tmp_path / "captions.csv"))


def test_missing_and_corrupt_checkpoints_are_named(tmp_path):
    with pytest.raises(MissingInputError, match="nope.ckpt: no such checkpoint"):
        load_module(tmp_path / "nope.ckpt")

    for content in (b"", b"plain text", b"PK\x03\x04 truncated zip"):
        (tmp_path / "bad.ckpt").write_bytes(content)
        with pytest.raises(InputError, match="bad.ckpt: not a readable lightning-clip"):
            load_module(tmp_path / "bad.ckpt")


def test_unreadable_gallery_image_is_left_out_not_replaced(tmp_path, tiny_module):
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    intact = evaluate_retrieval(
        tiny_module, "toy", read_retrieval_set(_gallery(tmp_path / "a", colours)), 8
    )
    with pytest.warns(UserWarning, match="1.png"):
        broken = evaluate_retrieval(
            tiny_module, "toy", read_retrieval_set(_gallery(tmp_path / "b", colours, {1})), 8
        )

    assert intact["retrieval/toy/images"] == 4 and intact["retrieval/toy/skipped_images"] == 0
    assert broken["retrieval/toy/images"] == 3 and broken["retrieval/toy/skipped_images"] == 1
    # with 3 images in the gallery, recall at 5 is complete both ways
    assert broken["retrieval/toy/text_to_image_R@5"] == 1.0


def test_missing_gallery_files_are_dropped_with_a_warning(tmp_path):
    spec = _gallery(tmp_path, [(1, 2, 3), (4, 5, 6)])
    (tmp_path / "0.png").unlink()
    with pytest.warns(UserWarning, match="1 image file\\(s\\) missing"):
        records = read_retrieval_set(spec)
    assert [record.image_path.name for record in records] == ["1.png"]


def test_zeroshot_set_errors_name_the_set_and_file(tmp_path):
    (tmp_path / "labels.csv").write_text("image,label\na.png,sevn\n")
    spec = ZeroShotSet(
        name="digits",
        images=str(tmp_path / "labels.csv"),
        class_names=["seven", "eight"],
        templates=["a photo of {}."],
    )
    with pytest.raises(InputError, match="zero-shot set 'digits': .*labels.csv:2: label 'sevn'"):
        zeroshot_evaluator(spec, batch_size=4)


def test_interpolation_mixes_float_tensors_and_keeps_counters():
    from lightning_clip.evaluate import interpolate_state_dicts

    first = {"w": torch.zeros(2), "steps": torch.tensor(3)}
    second = {"w": torch.full((2,), 4.0), "steps": torch.tensor(9)}
    mixed = interpolate_state_dicts(first, second, 0.25)
    assert mixed["w"].tolist() == [1.0, 1.0] and mixed["steps"].item() == 3
    with pytest.raises(InputError, match="shapes"):
        interpolate_state_dicts(first, {"w": torch.zeros(3), "steps": torch.tensor(1)}, 0.5)
    with pytest.raises(InputError, match="mixing weight 1.5"):
        interpolate_state_dicts(first, second, 1.5)

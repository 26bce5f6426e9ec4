"""Using a checkpoint without a Trainer: load, embed, classify, and exported encoders."""

import json

import pytest
import torch
from PIL import Image
from torch.testing import assert_close

from lightning_clip.cli import cli_main
from lightning_clip.export import export_encoders
from lightning_clip.inference import load
from tests.test_cli import _tiny_args, _tiny_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, digits_root) -> str:
    return _tiny_checkpoint(tmp_path_factory.mktemp("run"), digits_root, train_batches=3)


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> list:
    folder = tmp_path_factory.mktemp("pictures")
    paths = []
    for index, colour in enumerate([(250, 10, 10), (10, 250, 10), (10, 10, 250)]):
        Image.new("RGB", (40, 30), colour).save(folder / f"{index}.png")
        paths.append(folder / f"{index}.png")
    return paths


def test_classify_equals_the_zero_shot_recipe(checkpoint, pictures):
    clip = load(checkpoint)
    class_names, templates = ["red", "green", "blue"], ["a {} square.", "the colour {}."]

    probabilities = clip.classify(pictures, class_names, templates)

    # by hand: mean of each class's prompt features, re-normalised, scaled dot products
    prompts = clip.encode_text([t.format(c) for c in class_names for t in templates])
    weights = torch.nn.functional.normalize(prompts.view(3, 2, -1).mean(1), dim=-1)
    expected = (clip.model.scale() * clip.encode_image(pictures) @ weights.T).softmax(-1)
    assert_close(probabilities, expected, atol=1e-5, rtol=1e-5)
    assert_close(probabilities.sum(-1), torch.ones(3))


def test_images_by_path_and_by_pixels_embed_alike(checkpoint, pictures):
    clip = load(checkpoint)
    pixels = torch.stack([clip.image_transform(Image.open(p).convert("RGB")) for p in pictures])
    assert_close(clip.encode_image(pictures), clip.encode_image(pixels))
    assert_close(clip.encode_image(pixels).norm(dim=-1), torch.ones(3))


def test_exported_encoders_give_the_model_features(checkpoint, tmp_path):
    clip = load(checkpoint)
    output = export_encoders(checkpoint, tmp_path / "exported", onnx=False)

    image_encoder = torch.export.load(output / "image_encoder.pt2").module()
    text_encoder = torch.export.load(output / "text_encoder.pt2").module()
    images = torch.randn(5, 3, 32, 32)  # another batch size than the one traced
    tokens = clip.tokenizer(["a cat", "two dogs on a sofa", "sun", "x"])
    with torch.no_grad():
        assert_close(image_encoder(images), clip.model.encode_image(images), atol=1e-4, rtol=0)
        assert_close(text_encoder(tokens), clip.model.encode_text(tokens), atol=1e-4, rtol=0)

    preprocessing = json.loads((output / "preprocessing.json").read_text())
    assert preprocessing["image"]["input_size"] == [3, 32, 32]
    assert preprocessing["text"]["context_length"] == 8
    assert preprocessing["logit_scale"] == pytest.approx(clip.model.scale().item())
    assert preprocessing["files"] == ["image_encoder.pt2", "text_encoder.pt2"]


def test_onnx_encoders_give_the_model_features(checkpoint, tmp_path):
    runtime = pytest.importorskip("onnxruntime")
    clip = load(checkpoint)
    output = export_encoders(checkpoint, tmp_path / "exported", onnx=True)

    images = torch.randn(5, 3, 32, 32)
    tokens = clip.tokenizer(["a cat", "two dogs on a sofa", "sun", "x"])
    for name, inputs, encode in [
        ("image_encoder.onnx", images, clip.model.encode_image),
        ("text_encoder.onnx", tokens, clip.model.encode_text),
    ]:
        session = runtime.InferenceSession(output / name)
        (features,) = session.run(["features"], {"inputs": inputs.numpy()})
        with torch.no_grad():
            assert_close(torch.from_numpy(features), encode(inputs), atol=1e-4, rtol=0)


@pytest.mark.data
def test_eval_runs_cifar10_with_the_clip_paper_prompts(checkpoint, tmp_path, capsys):
    import eval as eval_script
    from tests.conftest import shared_data

    cifar = shared_data("cifar10_test")
    prompts = shared_data("clip_zeroshot_prompts") / "prompts.json"
    spec = {
        "name": "cifar10", "images": str(cifar / "labels.csv"), "image_column": "file",
        "class_names": str(prompts), "templates": str(prompts), "prompts_key": "CIFAR10",
    }  # fmt: skip
    results = eval_script.main([
        "--checkpoint", checkpoint, "--zeroshot", json.dumps([spec]),
        "--output", str(tmp_path / "cifar10.json"),
    ])  # fmt: skip

    table = capsys.readouterr().out
    assert "| zeroshot/cifar10/top1 |" in table
    # a digits-trained tiny model knows nothing of CIFAR: its top-5 is near chance (0.5)
    assert 0.0 <= results["zeroshot/cifar10/top1"] <= 1.0
    assert 0.3 < results["zeroshot/cifar10/top5"] < 0.7


def test_wise_ft_sweep_ends_at_each_checkpoint(checkpoint, digits_root, tmp_path):
    import eval as eval_script

    # a second checkpoint of the same model: one more short fit
    other = cli_main([
        "fit", *_tiny_args(tmp_path, digits_root),
        "--seed_everything", "1",
        "--trainer.max_epochs", "1",
        "--trainer.limit_train_batches", "6",
        "--trainer.limit_val_batches", "1",
        "--trainer.callbacks+=pytorch_lightning.callbacks.ModelCheckpoint",
    ]).trainer.checkpoint_callback.best_model_path  # fmt: skip
    zeroshot = json.dumps([{
        "name": "digits", "images": str(digits_root / "heldout.csv"),
        "class_names": str(digits_root / "classes.txt"), "templates": ["a photo of a {}."],
    }])  # fmt: skip

    def run(*extra: str) -> dict[str, float]:
        return eval_script.main(["--checkpoint", checkpoint, "--zeroshot", zeroshot, *extra])

    sweep = run("--interpolate_with", other, "--mixing_weights", "[0.0, 0.5, 1.0]")
    key = "zeroshot/digits/top1"
    assert sweep[f"mix=0/{key}"] == pytest.approx(run()[key])
    assert sweep[f"mix=1/{key}"] == pytest.approx(eval_script.main([
        "--checkpoint", other, "--zeroshot", zeroshot,
    ])[key])  # fmt: skip
    assert f"mix=0.5/{key}" in sweep

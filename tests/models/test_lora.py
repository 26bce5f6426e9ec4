"""LoRA adapters set per tower: only adapters learn, checkpoints round-trip, merging is exact."""

import pytest
import torch
from torch.testing import assert_close

from lightning_clip.models import CLIPModel
from lightning_clip.models.lora import LoraSettings


def _tiny_lora_clip(make_image_tower, make_text_tower) -> CLIPModel:
    return CLIPModel(
        make_image_tower(lora=LoraSettings(target_modules=["qkv"], rank=2)),
        make_text_tower(lora=LoraSettings(target_modules=["query", "value"], rank=2)),
    )


def _batch(model: CLIPModel):
    tokenizer = model.text_tower.tokenizer
    tokens = tokenizer(["cat", "dog", "sun"], padding="max_length", max_length=8)["input_ids"]
    return torch.randn(3, 3, 32, 32), torch.tensor(tokens)


def test_only_adapters_heads_and_scale_learn(make_image_tower, make_text_tower):
    model = _tiny_lora_clip(make_image_tower, make_text_tower)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    backbone = {name for name in trainable if ".backbone." in f".{name}"}
    assert backbone and all("lora_" in name for name in backbone)
    assert any(".qkv.lora_A" in name for name in backbone)
    assert any(".query.lora_B" in name for name in backbone)
    assert {"image_tower.head.weight", "text_tower.head.weight", "logit_scale"} <= trainable


def test_lora_state_round_trips_and_merging_keeps_the_features(make_image_tower, make_text_tower):
    model = _tiny_lora_clip(make_image_tower, make_text_tower).eval()
    # adapters start as a no-op (B = 0); give them weights so the test means something
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.5)
    images, tokens = _batch(model)
    with torch.no_grad():
        expected = model(images, tokens)

    rebuilt = _tiny_lora_clip(make_image_tower, make_text_tower).eval()
    rebuilt.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert_close(rebuilt(images, tokens).image_features, expected.image_features)

    rebuilt.image_tower.merge_lora()
    rebuilt.text_tower.merge_lora()
    assert not any("lora_" in name for name, _ in rebuilt.named_parameters())
    with torch.no_grad():
        merged = rebuilt(images, tokens)
    assert_close(merged.image_features, expected.image_features, atol=1e-5, rtol=1e-5)
    assert_close(merged.text_features, expected.text_features, atol=1e-5, rtol=1e-5)


def test_lora_needs_target_modules_and_excludes_freezing(make_image_tower):
    with pytest.raises(ValueError, match="image_tower.lora.target_modules"):
        make_image_tower(lora=LoraSettings())
    with pytest.raises(ValueError, match="image_tower.lora"):
        make_image_tower(lora=LoraSettings(target_modules=["qkv"]), freeze_backbone=True)
    with pytest.raises(ValueError, match="image_tower.lora.target_modules"):
        make_image_tower(lora=LoraSettings(target_modules=["no_such_layer"]))

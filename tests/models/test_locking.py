"""Locking all but the top of a backbone, and learning-rate scales per tower and per layer."""

import pytest
import torch
from torch.testing import assert_close

from lightning_clip.module import CLIPLitModule

TWO_BLOCK_VIT = {"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2, "img_size": 32}


def _trainable(tower) -> set[str]:
    return {name for name, p in tower.named_parameters() if p.requires_grad}


def test_unlocked_layers_keep_only_the_top_of_a_locked_backbone(make_image_tower):
    tower = make_image_tower(freeze_backbone=True, unlocked_layers=1)
    trainable = _trainable(tower)
    assert "backbone.model.blocks.1.attn.qkv.weight" in trainable
    assert "backbone.model.norm.weight" in trainable
    assert "backbone.model.blocks.0.attn.qkv.weight" not in trainable
    assert "backbone.model.pos_embed" not in trainable
    assert "head.weight" in trainable


def test_unlocked_text_layers_take_the_pooler_with_the_last_layer(make_text_tower):
    tower = make_text_tower(freeze_backbone=True, unlocked_layers=1)
    trainable = {name for name in _trainable(tower) if name.startswith("backbone")}
    assert trainable and all(
        name.startswith(("backbone.model.encoder.layer.1.", "backbone.model.pooler."))
        for name in trainable
    )


def test_locked_batchnorm_keeps_its_statistics_while_the_top_trains(make_image_tower):
    tower = make_image_tower(
        model_name="resnet18", model_kwargs={}, image_size=32, freeze_backbone=True,
        unlocked_layers=1,
    )  # fmt: skip
    tower.train()
    stem_stats = tower.backbone.model.bn1.running_mean.clone()
    top_stats = tower.backbone.model.layer4[1].bn2.running_mean.clone()
    tower(torch.randn(4, 3, 32, 32) * 3 + 1)

    assert_close(tower.backbone.model.bn1.running_mean, stem_stats)
    assert not torch.equal(tower.backbone.model.layer4[1].bn2.running_mean, top_stats)


def test_unlocked_layers_need_a_locked_backbone(make_image_tower):
    with pytest.raises(ValueError, match="image_tower.unlocked_layers=2"):
        make_image_tower(unlocked_layers=2)


def test_layer_decay_scales_each_layer_group_from_the_top(make_image_tower):
    tower = make_image_tower(model_kwargs=TWO_BLOCK_VIT, lr_scale=0.5, layer_decay=0.5)
    scales = tower.lr_scales()
    assert scales["head.weight"] == 0.5
    assert scales["backbone.model.norm.weight"] == 0.5 * 0.5  # joins the last block
    assert scales["backbone.model.blocks.1.mlp.fc1.weight"] == 0.5 * 0.5
    assert scales["backbone.model.blocks.0.mlp.fc1.weight"] == 0.5 * 0.5**2
    assert scales["backbone.model.patch_embed.proj.weight"] == 0.5 * 0.5**3


class _FakeTrainer:
    estimated_stepping_batches = 10


def test_scheduler_applies_each_tower_learning_rate(make_image_tower, make_text_tower):
    module = CLIPLitModule(
        image_tower=lambda embed_dim: make_image_tower(),
        text_tower=lambda embed_dim: make_text_tower(lr_scale=0.1),
        embed_dim=16,
        warmup_steps=0,
        optimizer=lambda params: torch.optim.AdamW(params, lr=1.0),
    )
    module.trainer = _FakeTrainer()
    config = module.configure_optimizers()
    config["lr_scheduler"]["scheduler"].step_update(num_updates=0)

    text_ids = {id(p) for p in module.model.text_tower.parameters()}
    for group in config["optimizer"].param_groups:
        in_text = {id(p) in text_ids for p in group["params"]}
        assert len(in_text) == 1  # a group never mixes towers with different scales
        expected = 0.1 if in_text.pop() else 1.0
        assert group["lr"] == pytest.approx(expected)

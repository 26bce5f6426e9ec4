"""Activation checkpointing and compilation change cost, never the numbers."""

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from lightning_clip.module import CLIPLitModule
from tests.conftest import TINY_BERT


def _gradients(tower, inputs) -> dict[str, torch.Tensor]:
    tower.train()
    tower(inputs).square().sum().backward()
    return {name: p.grad.clone() for name, p in tower.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("modality", ["image", "text"])
def test_grad_checkpointing_gives_the_same_gradients(modality, make_image_tower, make_text_tower):
    # dropout off, so the recomputed forward equals the stored one
    if modality == "image":
        make, inputs = make_image_tower, torch.randn(2, 3, 32, 32)
    else:
        make, inputs = make_text_tower, torch.tensor([[2, 10, 20, 3, 0, 0, 0, 0]] * 2)
    kwargs = {}
    if modality == "text":
        no_dropout = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
        kwargs = {"config": {**TINY_BERT, **no_dropout}}

    plain = _gradients(make(**kwargs), inputs)
    checkpointed = make(grad_checkpointing=True, **kwargs)
    assert _uses_checkpointing(checkpointed, modality)
    for name, grad in _gradients(checkpointed, inputs).items():
        assert_close(grad, plain[name], atol=1e-6, rtol=1e-5)


def _uses_checkpointing(tower, modality: str) -> bool:
    model = tower.backbone.model
    return model.grad_checkpointing if modality == "image" else model.is_gradient_checkpointing


def test_compile_flag_compiles_both_towers_in_place(make_image_tower, make_text_tower):
    module = CLIPLitModule(
        image_tower=lambda embed_dim: make_image_tower(),
        text_tower=lambda embed_dim: make_text_tower(),
        embed_dim=16,
        compile=True,
    )
    assert module.model.image_tower._compiled_call_impl is not None
    assert module.model.text_tower._compiled_call_impl is not None
    # in-place compilation keeps the checkpoint keys
    assert not any("_orig_mod" in key for key in module.state_dict())


@pytest.mark.parametrize("model_name", ["resnet18", "mobilenetv3_small_050"])
def test_channels_last_gives_the_same_features_and_gradients(model_name, make_image_tower):
    inputs = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    towers = [
        make_image_tower(model_name=model_name, model_kwargs={}, channels_last=layout).eval()
        for layout in (False, True)
    ]  # eval: batch statistics of a tiny batch would magnify rounding differences

    convolution = next(m for m in towers[1].backbone.modules() if isinstance(m, nn.Conv2d))
    assert convolution.weight.is_contiguous(memory_format=torch.channels_last)
    assert not convolution.weight.is_contiguous()
    features = []
    for tower in towers:
        features.append(tower(inputs))
        features[-1].square().sum().backward()
    assert_close(features[1], features[0], atol=1e-5, rtol=1e-4)
    for (name, plain), (_, last) in zip(*(t.named_parameters() for t in towers), strict=True):
        assert_close(last.grad, plain.grad, atol=1e-5, rtol=1e-4, msg=name)

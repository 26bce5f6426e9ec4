"""Gradient caching gives the gradients of one step on the whole batch."""

import pytest
import torch
from torch.testing import assert_close

from lightning_clip.grad_cache import grad_cache_backward
from lightning_clip.losses import ContrastiveLoss, SigmoidLoss
from lightning_clip.models import CLIPModel
from tests.conftest import TINY_BERT

NO_DROPOUT = {**TINY_BERT, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


def _model(make_image_tower, make_text_tower, bias) -> CLIPModel:
    model = CLIPModel(make_image_tower(), make_text_tower(config=NO_DROPOUT), init_logit_bias=bias)
    return model.train()


def _batch(model: CLIPModel):
    torch.manual_seed(1)
    words = ["cat", "dog", "sun", "sea", "car", "map", "pen", "cup"]
    tokens = model.text_tower.tokenizer(words, padding="max_length", max_length=8)["input_ids"]
    return torch.randn(8, 3, 32, 32), torch.tensor(tokens)


def _grads(model: CLIPModel) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize(("loss_fn", "bias"), [(ContrastiveLoss(), None), (SigmoidLoss(), -10.0)])
@pytest.mark.parametrize("chunks", [2, 4])
def test_cached_gradients_equal_one_full_batch_step(
    loss_fn, bias, chunks, make_image_tower, make_text_tower
):
    model = _model(make_image_tower, make_text_tower, bias)
    images, tokens = _batch(model)

    output = model(images, tokens)
    extra = () if output.logit_bias is None else (output.logit_bias,)
    full_loss = loss_fn(output.image_features, output.text_features, output.logit_scale, *extra)
    full_loss.backward()
    expected = _grads(model)
    model.zero_grad()

    loss = grad_cache_backward(model, loss_fn, images, tokens, chunks, lambda t: t.backward())

    assert loss.item() == pytest.approx(full_loss.item(), rel=1e-6)
    cached = _grads(model)
    assert cached.keys() == expected.keys() and "logit_scale" in cached
    for name, grad in cached.items():
        assert_close(grad, expected[name], atol=1e-5, rtol=1e-5, msg=name)

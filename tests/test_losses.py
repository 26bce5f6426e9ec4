import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from lightning_clip.losses import ContrastiveLoss, SigmoidLoss, text_ids


def test_loss_matches_hand_computed_value():
    image_features = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text_features = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    scale = torch.tensor(2.0)

    # similarities: [[0.6, 0.0], [0.8, 1.0]] scaled by 2
    row_0 = -math.log(math.exp(1.2) / (math.exp(1.2) + math.exp(0.0)))
    row_1 = -math.log(math.exp(2.0) / (math.exp(1.6) + math.exp(2.0)))
    col_0 = -math.log(math.exp(1.2) / (math.exp(1.2) + math.exp(1.6)))
    col_1 = -math.log(math.exp(2.0) / (math.exp(0.0) + math.exp(2.0)))
    expected = ((row_0 + row_1) / 2 + (col_0 + col_1) / 2) / 2

    loss = ContrastiveLoss()(image_features, text_features, scale)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("batch_size", [2, 7, 32])
def test_loss_is_log_batch_size_for_identical_features(batch_size):
    features = F.normalize(torch.ones(batch_size, 4), dim=-1)
    loss = ContrastiveLoss()(features, features, torch.tensor(10.0))
    assert loss.item() == pytest.approx(math.log(batch_size), rel=1e-6)


def test_loss_is_symmetric_in_images_and_texts():
    torch.manual_seed(0)
    image_features = F.normalize(torch.randn(6, 8), dim=-1)
    text_features = F.normalize(torch.randn(6, 8), dim=-1)
    loss_fn = ContrastiveLoss()
    scale = torch.tensor(5.0)
    assert_close(
        loss_fn(image_features, text_features, scale),
        loss_fn(text_features, image_features, scale),
    )


def test_loss_approaches_zero_for_aligned_pairs_at_high_scale():
    features = torch.eye(8)
    loss = ContrastiveLoss()(features, features, torch.tensor(100.0))
    assert loss.item() < 1e-6


def test_loss_passes_gradient_to_logit_scale():
    torch.manual_seed(0)
    image_features = F.normalize(torch.randn(4, 8), dim=-1)
    logit_scale = torch.tensor(math.log(1 / 0.07), requires_grad=True)
    ContrastiveLoss()(image_features, image_features, logit_scale.exp()).backward()
    # matching pairs are the most similar, so a larger scale lowers the loss
    assert logit_scale.grad is not None and logit_scale.grad.item() < 0


def test_local_loss_equals_full_loss_on_one_device():
    torch.manual_seed(0)
    image_features = F.normalize(torch.randn(5, 8), dim=-1)
    text_features = F.normalize(torch.randn(5, 8), dim=-1)
    scale = torch.tensor(3.0)
    assert_close(
        ContrastiveLoss(local_loss=True)(image_features, text_features, scale),
        ContrastiveLoss()(image_features, text_features, scale),
    )


def test_sigmoid_loss_matches_hand_computed_value():
    image_features = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text_features = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    scale, bias = torch.tensor(2.0), torch.tensor(-1.0)

    def log_sigmoid(x: float) -> float:
        return -math.log1p(math.exp(-x))

    # logits = 2 * similarity - 1: [[0.2, -1.0], [0.6, 1.0]]; matching pairs on the diagonal
    positives = log_sigmoid(0.2) + log_sigmoid(1.0)
    negatives = log_sigmoid(1.0) + log_sigmoid(-0.6)  # the sign of -1.0 and 0.6 flipped
    expected = -(positives + negatives) / 2
    loss = SigmoidLoss()(image_features, text_features, scale, bias)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_sigmoid_loss_passes_gradient_to_scale_and_bias():
    torch.manual_seed(0)
    features = F.normalize(torch.randn(4, 8), dim=-1)
    scale = torch.tensor(10.0, requires_grad=True)
    bias = torch.tensor(-10.0, requires_grad=True)
    SigmoidLoss()(features, features, scale, bias).backward()
    # at bias -10 every pair looks negative: raising the bias helps the positives most
    assert bias.grad.item() < 0
    assert scale.grad is not None and scale.grad.item() < 0


def test_repeated_captions_share_the_target_instead_of_being_negatives():
    generator = torch.Generator().manual_seed(3)
    images = F.normalize(torch.randn(3, 4, generator=generator), dim=-1)
    texts = F.normalize(torch.randn(3, 4, generator=generator), dim=-1)
    scale = torch.tensor(5.0)
    image_ids = torch.tensor([0, 1, 2])
    caption_ids = torch.tensor([7, 8, 7])  # samples 0 and 2 have the same caption

    logits = scale * images @ texts.T
    targets = torch.tensor([[0.5, 0, 0.5], [0, 1, 0], [0.5, 0, 0.5]])
    by_hand = (
        -(targets * logits.log_softmax(dim=1)).sum(1).mean()
        - (targets * logits.T.log_softmax(dim=1)).sum(1).mean()
    ) / 2
    loss = ContrastiveLoss()(images, texts, scale, image_ids, caption_ids)
    assert loss.item() == pytest.approx(by_hand.item(), abs=1e-6)

    # without duplicates the targets are the usual diagonal
    distinct = ContrastiveLoss()(images, texts, scale, image_ids, torch.tensor([7, 8, 9]))
    assert distinct.item() == pytest.approx(
        ContrastiveLoss()(images, texts, scale).item(), abs=1e-6
    )


def test_sigmoid_loss_labels_a_repeated_image_positive():
    generator = torch.Generator().manual_seed(4)
    images = F.normalize(torch.randn(3, 4, generator=generator), dim=-1)
    texts = F.normalize(torch.randn(3, 4, generator=generator), dim=-1)
    scale, bias = torch.tensor(10.0), torch.tensor(-3.0)
    image_ids = torch.tensor([5, 6, 5])  # samples 0 and 2 show the same image

    logits = scale * images @ texts.T + bias
    labels = torch.tensor([[1.0, -1, 1], [-1, 1, -1], [1, -1, 1]])
    by_hand = -F.logsigmoid(labels * logits).sum() / 3
    loss = SigmoidLoss()(images, texts, scale, bias, image_ids, torch.tensor([1, 2, 3]))
    assert loss.item() == pytest.approx(by_hand.item(), abs=1e-6)


def test_text_ids_are_equal_exactly_for_equal_token_rows():
    tokens = torch.tensor([[101, 7, 8, 102, 0], [101, 7, 8, 102, 0], [101, 8, 7, 102, 0]])
    ids = text_ids(tokens)
    assert ids[0] == ids[1] and ids[0] != ids[2]
    assert ids.dtype == torch.int64

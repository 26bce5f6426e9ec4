import math

import pytest
import torch

from lightning_clip.metrics import image_to_text_key, retrieval_recall, text_to_image_key

# Three one-hot images, so a caption's similarity to image i is its i-th coordinate.
IMAGE_FEATURES = torch.eye(3)
# Five unit-length captions: image 0 owns 0 and 1, image 1 owns 2, image 2 owns 3 and 4.
TEXT_FEATURES = torch.tensor(
    [
        [0.00, 0.28, 0.96],
        [0.60, 0.80, 0.00],
        [0.48, 0.64, 0.60],
        [0.00, 0.80, 0.60],
        [0.36, 0.48, 0.80],
    ]
)
TEXT_IMAGE_INDEX = torch.tensor([0, 0, 1, 2, 2])

# image -> text, rank of the best-placed own caption (columns of TEXT_FEATURES):
#   image 0: own 0.00 and 0.60, nothing scores above 0.60 -> rank 0
#     (its first caption alone would rank last: any caption counts)
#   image 1: own 0.64; captions 1 and 3 score 0.80 -> rank 2
#   image 2: own 0.60 and 0.80; caption 0 scores 0.96 -> rank 1
# text -> image, rank of the own image (rows of TEXT_FEATURES):
#   caption 0: own 0.00 below 0.28 and 0.96 -> 2;  caption 1: 0.60 below 0.80 -> 1
#   caption 2: 0.64 is the top -> 0;  caption 3: 0.60 below 0.80 -> 1;  caption 4: top -> 0
EXPECTED = {
    image_to_text_key(1): 1 / 3,
    image_to_text_key(2): 2 / 3,
    image_to_text_key(3): 3 / 3,
    text_to_image_key(1): 2 / 5,
    text_to_image_key(2): 4 / 5,
    text_to_image_key(3): 5 / 5,
}


def test_recall_matches_hand_computed_values():
    results = retrieval_recall(IMAGE_FEATURES, TEXT_FEATURES, TEXT_IMAGE_INDEX, ks=(1, 2, 3))
    assert results == pytest.approx(EXPECTED)


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 4])
def test_recall_does_not_depend_on_chunk_size(chunk_size):
    def recall(size: int) -> dict[str, float]:
        return retrieval_recall(
            IMAGE_FEATURES, TEXT_FEATURES, TEXT_IMAGE_INDEX, ks=(1, 2, 3), chunk_size=size
        )

    assert recall(chunk_size) == recall(1000)
    assert recall(chunk_size) == pytest.approx(EXPECTED)


def test_recall_does_not_depend_on_caption_order():
    order = torch.tensor([4, 2, 0, 3, 1])
    results = retrieval_recall(
        IMAGE_FEATURES, TEXT_FEATURES[order], TEXT_IMAGE_INDEX[order], ks=(1, 2, 3), chunk_size=2
    )
    assert results == pytest.approx(EXPECTED)


def test_recall_uses_the_default_ks_and_metric_keys():
    results = retrieval_recall(IMAGE_FEATURES, TEXT_FEATURES, TEXT_IMAGE_INDEX)
    assert set(results) == {
        f"val/{direction}_R@{k}"
        for direction in ("image_to_text", "text_to_image")
        for k in (1, 5, 10)
    }
    # every gallery has at most five items, so recall at 5 and 10 is complete
    assert all(value == 1.0 for key, value in results.items() if not key.endswith("R@1"))


def test_perfectly_aligned_features_have_full_recall():
    torch.manual_seed(0)
    features = torch.nn.functional.normalize(torch.randn(6, 16), dim=-1)
    results = retrieval_recall(features, features, torch.arange(6), ks=(1,))
    assert results == {image_to_text_key(1): 1.0, text_to_image_key(1): 1.0}


def test_collapsed_features_get_chance_recall():
    # every score ties: neither perfect retrieval (ties for the query) nor zero (against it)
    image_features = torch.ones(3, 4) / 2
    text_features = torch.ones(5, 4) / 2
    results = retrieval_recall(image_features, text_features, TEXT_IMAGE_INDEX, ks=(1, 2))

    # image -> text over 5 tied captions: an image with c captions is hit at 1 with c/5,
    # at 2 with 1 - C(5-c, 2)/C(5, 2)
    captions_per_image = torch.bincount(TEXT_IMAGE_INDEX, minlength=3).tolist()
    at_1 = sum(c / 5 for c in captions_per_image) / 3
    at_2 = sum(1 - math.comb(5 - c, 2) / math.comb(5, 2) for c in captions_per_image) / 3
    assert results[image_to_text_key(1)] == pytest.approx(at_1)
    assert results[image_to_text_key(2)] == pytest.approx(at_2)
    # text -> image over 3 tied images
    assert results[text_to_image_key(1)] == pytest.approx(1 / 3)
    assert results[text_to_image_key(2)] == pytest.approx(2 / 3)


def test_identical_captions_of_different_images_share_the_hit():
    # two images whose captions are the same text: either caption is as good as the other
    image_features = torch.eye(2)
    text_features = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    results = retrieval_recall(image_features, text_features, torch.tensor([0, 1]), ks=(1, 2))
    # each image ties its own caption with the other image's identical one
    assert results[image_to_text_key(1)] == pytest.approx(0.5)
    assert results[text_to_image_key(1)] == pytest.approx(0.5)
    assert results[image_to_text_key(2)] == pytest.approx(1.0)


def test_mean_and_median_rank_match_hand_computed_ranks():
    from lightning_clip.metrics import rank_key, retrieval_metrics

    results = retrieval_metrics(IMAGE_FEATURES, TEXT_FEATURES, TEXT_IMAGE_INDEX)
    # 1-based ranks from the table above: images [1, 3, 2], captions [3, 2, 1, 2, 1]
    assert results[rank_key("image_to_text", "mean")] == pytest.approx(2.0)
    assert results[rank_key("image_to_text", "median")] == pytest.approx(2.0)
    assert results[rank_key("text_to_image", "mean")] == pytest.approx(9 / 5)
    assert results[rank_key("text_to_image", "median")] == pytest.approx(2.0)


def test_collapsed_features_have_the_chance_mean_rank():
    from lightning_clip.metrics import rank_key, retrieval_metrics

    # three tied images per caption: the own image's expected rank is (1 + 2 + 3) / 3 = 2
    results = retrieval_metrics(torch.ones(3, 4) / 2, torch.ones(5, 4) / 2, TEXT_IMAGE_INDEX)
    assert results[rank_key("text_to_image", "mean")] == pytest.approx(2.0)

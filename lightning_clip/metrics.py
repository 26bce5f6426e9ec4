"""Metric key names, and retrieval recall@K for galleries where an image has many captions."""

import torch
from torch import Tensor

TRAIN_LOSS = "train/loss"
TRAIN_LOGIT_SCALE = "train/logit_scale"
TRAIN_LR = "train/lr"
TRAIN_SAMPLES_PER_SECOND = "train/samples_per_second"
TRAIN_DATA_WAIT = "train/data_wait_seconds"
TRAIN_SKIPPED = "train/skipped_samples"
VAL_LOSS = "val/loss"
RECALL_KS = (1, 5, 10)


def image_to_text_key(k: int) -> str:
    return f"val/image_to_text_R@{k}"


def text_to_image_key(k: int) -> str:
    return f"val/text_to_image_R@{k}"


def zeroshot_key(name: str, metric: str) -> str:
    return f"zeroshot/{name}/{metric}"


@torch.no_grad()
def retrieval_recall(
    image_features: Tensor,
    text_features: Tensor,
    text_image_index: Tensor,
    ks: tuple[int, ...] = RECALL_KS,
    chunk_size: int = 1024,
) -> dict[str, float]:
    """Recall@K both ways; an image counts as found if any of its captions ranks in the top K.

    Args:
        image_features: (N, E) normalised features of the gallery images.
        text_features: (M, E) normalised features of all captions.
        text_image_index: (M,) index into the N images of each caption's image.

    Ties count against the query (a wrong item scoring exactly as high as the right one is
    ranked ahead of it), so a collapsed model that gives every item the same score gets zero
    recall rather than perfect recall. Similarities are computed `chunk_size` rows at a time,
    so N x M never has to fit at once.
    """
    num_images = image_features.shape[0]
    image_best_rank = torch.empty(num_images, dtype=torch.long)
    text_rank = torch.empty(text_features.shape[0], dtype=torch.long)

    # image -> text: rank of the best-placed correct caption
    for start in range(0, num_images, chunk_size):
        similarity = image_features[start : start + chunk_size] @ text_features.T  # (n, M)
        rows = torch.arange(start, start + similarity.shape[0])
        correct = text_image_index.unsqueeze(0) == rows.unsqueeze(1)  # (n, M)
        best_correct = similarity.masked_fill(~correct, float("-inf")).amax(dim=1)
        ahead = (similarity >= best_correct.unsqueeze(1)) & ~correct
        image_best_rank[rows] = ahead.sum(dim=1).cpu()

    # text -> image: rank of the caption's own image
    for start in range(0, text_features.shape[0], chunk_size):
        similarity = text_features[start : start + chunk_size] @ image_features.T  # (m, N)
        own = text_image_index[start : start + chunk_size]
        own_score = similarity.gather(1, own.unsqueeze(1))
        ahead = (similarity >= own_score).sum(dim=1) - 1  # the own image ties with itself
        text_rank[start : start + similarity.shape[0]] = ahead.cpu()

    results = {}
    for k in ks:
        results[image_to_text_key(k)] = (image_best_rank < k).float().mean().item()
        results[text_to_image_key(k)] = (text_rank < k).float().mean().item()
    return results

"""Metric key names, and retrieval recall@K for galleries where an image has many captions."""

import pytorch_lightning as pl
import torch
from torch import Tensor

TRAIN_LOSS = "train/loss"
TRAIN_LOGIT_SCALE = "train/logit_scale"
TRAIN_LOGIT_BIAS = "train/logit_bias"
TRAIN_LR = "train/lr"
TRAIN_SAMPLES_PER_SECOND = "train/samples_per_second"
TRAIN_DATA_WAIT = "train/data_wait_seconds"
TRAIN_SKIPPED = "train/skipped_samples"
TRAIN_NONFINITE = "train/nonfinite_steps"
TRAIN_TRUNCATED = "train/truncated_captions"
VAL_LOSS = "val/loss"
VAL_SKIPPED = "val/skipped_samples"
RECALL_KS = (1, 5, 10)


def step_is_written(trainer: pl.Trainer) -> bool:
    """Whether the loggers get this training step's `on_step` values (`log_every_n_steps`).

    Lightning keeps a step value only on the steps it writes, so a value that is neither on
    the progress bar nor summed over the epoch need not be logged on the others: each
    `self.log` call costs a fraction of a millisecond, every step.
    """
    # Lightning's own test, which has no public name
    connector = getattr(trainer, "_logger_connector", None)
    if connector is None or trainer.fast_dev_run:
        return True
    return bool(connector.should_update_logs)


def image_to_text_key(k: int) -> str:
    return f"val/image_to_text_R@{k}"


def text_to_image_key(k: int) -> str:
    return f"val/text_to_image_R@{k}"


def rank_key(direction: str, statistic: str) -> str:
    """`direction` is image_to_text or text_to_image; `statistic` is mean or median."""
    return f"val/{direction}_{statistic}_rank"


def _expected_rank(ahead: Tensor, tied_wrong: Tensor, tied_correct: Tensor) -> Tensor:
    """1-based rank of the first correct item, expected over random tie-breaking."""
    return 1.0 + ahead.double() + tied_wrong.double() / (tied_correct.double() + 1.0)


def zeroshot_key(name: str, metric: str) -> str:
    return f"zeroshot/{name}/{metric}"


def _hit_probability(ahead: Tensor, tied_wrong: Tensor, tied_correct: Tensor, k: int) -> Tensor:
    """Chance that a correct item lands in the top `k` when ties are broken at random.

    Per query: `ahead` wrong items score strictly higher than the best correct one, and
    `tied_wrong` wrong and `tied_correct` correct items share that best score.
    """
    slots = k - ahead  # places left in the top k for the tied block
    miss = torch.ones(ahead.shape, dtype=torch.float64)
    for i in range(k):
        # the (i + 1)-th place of the tied block also goes to a wrong item
        draw = (tied_wrong - i).clamp(min=0) / (tied_wrong + tied_correct - i).clamp(min=1)
        miss = torch.where(i < slots, miss * draw, miss)
    return torch.where(slots > 0, 1.0 - miss, torch.zeros_like(miss))


def _tie_counts(similarity: Tensor, correct: Tensor, tolerance: float) -> tuple[Tensor, ...]:
    """(n, M) scores and correctness -> per row: wrong ahead, wrong tied, correct tied."""
    best_correct = similarity.masked_fill(~correct, float("-inf")).amax(dim=1, keepdim=True)
    tied = (similarity - best_correct).abs() <= tolerance
    ahead = (similarity > best_correct + tolerance) & ~correct
    return (
        ahead.sum(dim=1).cpu(),
        (tied & ~correct).sum(dim=1).cpu(),
        (tied & correct).sum(dim=1).cpu(),
    )


@torch.no_grad()
def retrieval_metrics(
    image_features: Tensor,
    text_features: Tensor,
    text_image_index: Tensor,
    ks: tuple[int, ...] = RECALL_KS,
    chunk_size: int = 1024,
    tie_tolerance: float = 1e-6,
) -> dict[str, float]:
    """Recall@K and mean/median rank both ways; an image counts as found at the rank of its
    best-placed caption.

    Args:
        image_features: (N, E) normalised features of the gallery images.
        text_features: (M, E) normalised features of all captions.
        text_image_index: (M,) index into the N images of each caption's image.

    Scores within `tie_tolerance` are ties, broken uniformly at random in expectation: a
    collapsed model that scores every item alike gets chance recall, neither zero nor full,
    and a caption text shared by several images competes fairly with its copies.
    Similarities are computed `chunk_size` rows at a time, so N x M never has to fit at once.
    """
    num_images, num_texts = image_features.shape[0], text_features.shape[0]
    image_counts, text_counts = [], []

    # image -> text: the best-placed of the image's captions
    for start in range(0, num_images, chunk_size):
        similarity = image_features[start : start + chunk_size] @ text_features.T  # (n, M)
        rows = torch.arange(start, start + similarity.shape[0], device=similarity.device)
        correct = text_image_index.to(similarity.device).unsqueeze(0) == rows.unsqueeze(1)
        image_counts.append(_tie_counts(similarity, correct, tie_tolerance))

    # text -> image: the caption's own image
    for start in range(0, num_texts, chunk_size):
        similarity = text_features[start : start + chunk_size] @ image_features.T  # (m, N)
        own = text_image_index[start : start + chunk_size].to(similarity.device)
        correct = torch.zeros_like(similarity, dtype=torch.bool)
        correct[torch.arange(similarity.shape[0]), own] = True
        text_counts.append(_tie_counts(similarity, correct, tie_tolerance))

    image_counts = [torch.cat(parts) for parts in zip(*image_counts, strict=True)]
    text_counts = [torch.cat(parts) for parts in zip(*text_counts, strict=True)]
    results = {}
    for k in ks:
        results[image_to_text_key(k)] = _hit_probability(*image_counts, k).mean().item()
        results[text_to_image_key(k)] = _hit_probability(*text_counts, k).mean().item()
    for direction, counts in (("image_to_text", image_counts), ("text_to_image", text_counts)):
        ranks = _expected_rank(*counts)
        results[rank_key(direction, "mean")] = ranks.mean().item()
        results[rank_key(direction, "median")] = ranks.median().item()
    return results


def retrieval_recall(
    image_features: Tensor,
    text_features: Tensor,
    text_image_index: Tensor,
    ks: tuple[int, ...] = RECALL_KS,
    chunk_size: int = 1024,
) -> dict[str, float]:
    """Only the recall@K part of `retrieval_metrics`."""
    results = retrieval_metrics(image_features, text_features, text_image_index, ks, chunk_size)
    return {key: value for key, value in results.items() if "_R@" in key}

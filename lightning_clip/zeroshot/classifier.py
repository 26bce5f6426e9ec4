"""Zero-shot classifier weights: the mean of each class's prompt embeddings, re-normalised."""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_clip.zeroshot.templates import ClassName


def class_prompts(class_name: ClassName, templates: list[str]) -> list[str]:
    synonyms = [class_name] if isinstance(class_name, str) else list(class_name)
    return [template.format(name) for name in synonyms for template in templates]


@torch.no_grad()
def build_zeroshot_weights(
    encode_text: Callable[[list[str]], Tensor],
    class_names: list[ClassName],
    templates: list[str],
    batch_size: int = 256,
) -> Tensor:
    """C classes x T templates -> (E, C) unit-length class vectors.

    `encode_text` maps a list of prompts to (n, E) features; prompts are sent in batches of
    `batch_size` across class boundaries so few large calls replace many small ones.
    """
    prompts, owner = [], []
    for index, class_name in enumerate(class_names):
        texts = class_prompts(class_name, templates)
        prompts.extend(texts)
        owner.extend([index] * len(texts))

    features = torch.cat(
        [
            F.normalize(encode_text(prompts[start : start + batch_size]).float(), dim=-1)
            for start in range(0, len(prompts), batch_size)
        ]
    )  # (C * T, E)

    owner = torch.tensor(owner, device=features.device)
    sums = torch.zeros(len(class_names), features.shape[1], device=features.device)
    sums.index_add_(0, owner, features)
    return F.normalize(sums, dim=-1).T  # (E, C)

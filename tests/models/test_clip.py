import math
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

from lightning_clip.losses import ContrastiveLoss


def test_logit_scale_starts_at_clip_temperature(tiny_clip):
    assert tiny_clip.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    assert tiny_clip.scale().item() == pytest.approx(1 / 0.07, rel=1e-5)


def test_features_are_unit_length(tiny_clip, tokenizer_dir):
    tokens = tiny_clip.text_tower.tokenizer(["abc", "de"], padding="max_length", max_length=8)
    output = tiny_clip(torch.randn(2, 3, 32, 32), torch.tensor(tokens["input_ids"]))
    assert_close(output.image_features.norm(dim=-1), torch.ones(2))
    assert_close(output.text_features.norm(dim=-1), torch.ones(2))


def test_scale_clamp_holds_after_an_update_that_pushes_past_100(tiny_clip):
    optimizer = torch.optim.SGD([tiny_clip.logit_scale], lr=10.0)
    tiny_clip.logit_scale.grad = torch.tensor(-1.0)  # a step of +10 in log space
    optimizer.step()
    assert tiny_clip.logit_scale.item() > math.log(100)
    assert tiny_clip.scale().item() == pytest.approx(100.0)

    tiny_clip.clamp_logit_scale()
    assert tiny_clip.logit_scale.item() == pytest.approx(math.log(100))


def test_a_few_steps_lower_the_loss_on_a_fixed_batch(tiny_clip):
    torch.manual_seed(0)
    images = torch.randn(8, 3, 32, 32)
    captions = ["zero", "one", "two", "three", "four", "five", "six", "seven"]
    tokenizer = tiny_clip.text_tower.tokenizer
    tokens = torch.tensor(tokenizer(captions, padding="max_length", max_length=8)["input_ids"])
    optimizer = torch.optim.AdamW(tiny_clip.parameters(), lr=3e-3)
    loss_fn = ContrastiveLoss()

    losses = []
    for _ in range(20):
        output = tiny_clip(images, tokens)
        loss = loss_fn(output.image_features, output.text_features, output.logit_scale)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())

    assert losses[0] > 1.0  # random towers cannot tell the 8 pairs apart
    assert losses[-1] < 0.5 * losses[0], losses


def test_model_code_imports_without_lightning():
    import subprocess
    import sys

    code = (
        "import sys, lightning_clip.models, lightning_clip.losses; "
        "print('pytorch_lightning' in sys.modules)"
    )
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=120
    )
    assert done.stdout.strip() == "False", done.stderr[-2000:]

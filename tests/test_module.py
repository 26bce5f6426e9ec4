import csv
import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger
from torch import nn

from lightning_clip import metrics
from lightning_clip.callbacks import Throughput
from lightning_clip.module import CLIPLitModule, parameter_groups


def _names(model: nn.Module, group: dict) -> set[str]:
    ids = {id(parameter) for parameter in group["params"]}
    return {name for name, parameter in model.named_parameters() if id(parameter) in ids}


def test_weight_decay_groups_exempt_biases_norms_embeddings_and_logit_scale(tiny_module):
    model = tiny_module.model
    decay, no_decay = parameter_groups(model)
    decayed, exempt = _names(model, decay), _names(model, no_decay)

    assert no_decay["weight_decay"] == 0.0 and "weight_decay" not in decay
    assert decayed.isdisjoint(exempt)
    assert decayed | exempt == {name for name, _ in model.named_parameters()}

    expected_exempt = {
        name
        for name, parameter in model.named_parameters()
        if parameter.ndim < 2
        or name.endswith(("embeddings.weight", "pos_embed", "cls_token"))
        or "embeddings." in name
    }
    assert exempt == expected_exempt
    assert "logit_scale" in exempt
    assert "text_tower.backbone.model.embeddings.word_embeddings.weight" in exempt
    assert "image_tower.backbone.model.pos_embed" in exempt
    assert "image_tower.backbone.model.blocks.0.attn.qkv.weight" in decayed
    assert "text_tower.head.weight" in decayed


def test_frozen_parameters_are_left_out_of_the_optimizer(make_image_tower, make_text_tower):
    module = CLIPLitModule(
        image_tower=lambda embed_dim: make_image_tower(),
        text_tower=lambda embed_dim: make_text_tower(freeze_backbone=True),
        embed_dim=16,
    )
    names = set().union(*(_names(module.model, group) for group in parameter_groups(module.model)))
    assert not any(name.startswith("text_tower.backbone") for name in names)
    assert "text_tower.head.weight" in names


class _FakeTrainer:
    estimated_stepping_batches = 110


def test_learning_rate_warms_up_linearly_then_decays_by_cosine(tiny_module):
    tiny_module.hparams.warmup_steps = 10
    tiny_module.hparams.warmup_lr_init = 0.0
    tiny_module.optimizer = lambda params: torch.optim.AdamW(params, lr=1.0)
    tiny_module.trainer = _FakeTrainer()
    config = tiny_module.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert config["lr_scheduler"]["interval"] == "step"

    def lr_at(step: int) -> float:
        scheduler.step_update(num_updates=step)
        return optimizer.param_groups[0]["lr"]

    assert lr_at(0) == pytest.approx(0.0)
    assert lr_at(5) == pytest.approx(0.5)
    assert lr_at(10) == pytest.approx(1.0)
    assert lr_at(60) == pytest.approx(0.5 * (1 + math.cos(math.pi * 50 / 100)))
    assert lr_at(110) == pytest.approx(0.0, abs=1e-9)
    # both parameter groups follow the schedule
    assert optimizer.param_groups[1]["lr"] == optimizer.param_groups[0]["lr"]


def test_sigmoid_loss_starts_at_siglip_scale_and_bias(make_image_tower, make_text_tower):
    module = CLIPLitModule(
        image_tower=lambda embed_dim: make_image_tower(),
        text_tower=lambda embed_dim: make_text_tower(),
        embed_dim=16,
        loss="sigmoid",
    )
    assert module.model.scale().item() == pytest.approx(10.0)
    assert module.model.logit_bias.item() == pytest.approx(-10.0)
    # the bias is learned, without weight decay
    no_decay = parameter_groups(module.model)[-1]
    assert any(p is module.model.logit_bias for p in no_decay["params"])


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"loss": "contrastive", "init_logit_bias": -10.0}, "model.init_logit_bias"),
        ({"loss": "sigmoid", "local_loss": True}, "model.local_loss"),
        ({"loss": "hinge"}, "model.loss"),
    ],
)
def test_invalid_loss_combinations_are_refused(overrides, key, make_image_tower, make_text_tower):
    with pytest.raises(ValueError, match=key):
        CLIPLitModule(
            image_tower=lambda embed_dim: make_image_tower(),
            text_tower=lambda embed_dim: make_text_tower(),
            embed_dim=16,
            **overrides,
        )


def test_encode_captions_cuts_padding_without_changing_features(tiny_module):
    captions = ["a", "a much longer caption than the others", "two words"]
    tiny_module.eval()
    with torch.no_grad():
        full = tiny_module.model.encode_text(tiny_module.tokenizer(captions))
    torch.testing.assert_close(tiny_module.encode_captions(captions, 2), full, atol=1e-5, rtol=0)


def test_step_values_are_written_every_log_every_n_steps_and_only_then(tmp_path, tiny_module):
    generator = torch.Generator().manual_seed(0)
    batches = [
        {"image": torch.randn(4, 3, 32, 32, generator=generator),
         "text": torch.randint(5, 77, (4, 8), generator=generator)}
        for _ in range(5)
    ]  # fmt: skip
    trainer = pl.Trainer(
        max_steps=5, log_every_n_steps=2, logger=CSVLogger(tmp_path), callbacks=[Throughput()],
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(tiny_module.train(), torch.utils.data.DataLoader(batches, batch_size=None))

    with open(Path(trainer.logger.log_dir) / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    keys = [
        metrics.TRAIN_LOSS, metrics.TRAIN_LOGIT_SCALE, metrics.TRAIN_LR,
        metrics.TRAIN_SAMPLES_PER_SECOND, metrics.TRAIN_DATA_WAIT,
    ]  # fmt: skip
    for key in keys:
        assert [int(row["step"]) for row in rows if row.get(key)] == [1, 3], key
    # the values are those of the written step, not of a step the log skipped
    lr_of_step = {
        int(row["step"]): float(row[metrics.TRAIN_LR]) for row in rows if row.get(metrics.TRAIN_LR)
    }
    assert lr_of_step[3] > lr_of_step[1]  # still warming up

"""Resuming from a checkpoint continues the run exactly, data order and dropout included."""

import pytest
import torch
from pytorch_lightning import Callback

from lightning_clip.cli import cli_main
from tests.test_cli import _tiny_args


class Recorder(Callback):
    """Loss and learning rate of every optimizer step."""

    def __init__(self):
        self.losses, self.lrs, self.indices = [], [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(outputs["loss"].item())
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])
        self.indices.append(batch["index"].tolist())


class StopAtStep(Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            trainer.should_stop = True


def _subset(digits_root, tmp_path, images: int):
    """A caption table of the first `images` digits: a short epoch, so runs cross epochs."""
    rows = (digits_root / "captions.csv").read_text().splitlines()
    kept = [row for row in rows[1:] if int(row.split("/")[1][:5]) < images]
    path = digits_root / f"first_{images}.csv"
    path.write_text("\n".join([rows[0], *kept]) + "\n")
    return path


def _fit(tmp_path, digits_root, train_file, *extra, callbacks=(), ckpt_path=None):
    args = _tiny_args(tmp_path, digits_root) + [
        "--data.train_file", str(train_file),
        "--data.val_fraction", "0.1",
        "--trainer.max_steps", "20",
        "--trainer.max_epochs", "-1",
        "--trainer.limit_val_batches", "1",
        "--trainer.log_every_n_steps", "1",
        "--seed_everything", "7",
        *extra,
    ]  # fmt: skip
    cli = cli_main(args, run=False)
    cli.trainer.callbacks.extend(callbacks)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt_path)
    return cli


@pytest.mark.slow
def test_ten_steps_resume_ten_steps_equals_twenty_steps(tmp_path, digits_root):
    # 142 images -> 127 for training -> 7 full batches of 16 per epoch: step 10 is mid-epoch
    train_file = _subset(digits_root, tmp_path, 142)

    straight = Recorder()
    whole = _fit(tmp_path / "whole", digits_root, train_file, callbacks=[straight])

    first, second = Recorder(), Recorder()
    checkpoint = [
        "--trainer.callbacks+=pytorch_lightning.callbacks.ModelCheckpoint",
        "--trainer.callbacks.every_n_train_steps=10",
        "--trainer.callbacks.save_top_k=-1",
    ]
    part = _fit(tmp_path / "part", digits_root, train_file, *checkpoint,
                callbacks=[first, StopAtStep(10)])  # fmt: skip
    assert part.trainer.global_step == 10
    (saved,) = (tmp_path / "part").rglob("*step=10.ckpt")
    resumed = _fit(tmp_path / "part", digits_root, train_file, callbacks=[second],
                   ckpt_path=saved)  # fmt: skip

    assert resumed.trainer.global_step == 20
    assert first.indices + second.indices == straight.indices  # same samples, same order
    assert len(straight.losses) == 20
    torch.testing.assert_close(first.losses + second.losses, straight.losses, atol=1e-6, rtol=0)
    torch.testing.assert_close(first.lrs + second.lrs, straight.lrs, atol=1e-12, rtol=0)
    # warmup, then cosine decay: the resumed run continued the schedule where it stopped
    assert straight.lrs[1] > straight.lrs[0] and straight.lrs[19] < straight.lrs[10]

    expected = whole.model.state_dict()
    for name, value in resumed.model.state_dict().items():
        torch.testing.assert_close(value, expected[name], atol=1e-6, rtol=0, msg=name)
    moments = [whole.trainer.optimizers[0].state_dict(), resumed.trainer.optimizers[0].state_dict()]
    for key, state in moments[0]["state"].items():
        torch.testing.assert_close(moments[1]["state"][key], state, atol=1e-6, rtol=0)


@pytest.mark.slow
def test_two_runs_with_one_seed_have_identical_losses_whatever_the_workers(tmp_path, digits_root):
    train_file = _subset(digits_root, tmp_path, 142)
    runs = [Recorder(), Recorder()]
    # every sample is drawn under its own seed, so loader workers change nothing
    for workers, recorder in zip(["0", "2"], runs, strict=True):
        _fit(tmp_path / workers, digits_root, train_file, "--data.num_workers", workers,
             callbacks=[recorder])  # fmt: skip
    assert len(runs[0].losses) == 20
    assert runs[0].losses == runs[1].losses  # bit for bit
    assert len(set(runs[0].losses)) > 1

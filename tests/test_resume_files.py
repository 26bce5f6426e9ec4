"""Finding the checkpoint to resume from, and replacing the `last.ckpt` link atomically."""

import os
import time

import pytest
import torch

from lightning_clip.checkpoint_io import replace_with_link
from lightning_clip.cli import cli_main
from lightning_clip.errors import InputError
from lightning_clip.resume import is_complete_checkpoint, newest_checkpoint, version_of
from tests.test_cli import _tiny_args


def _save(path, step):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"global_step": step, "state_dict": {"w": torch.ones(3)}}, path)
    return path


def test_newest_complete_checkpoint_wins_and_a_cut_file_is_passed_over(tmp_path):
    logs = tmp_path / "logs"
    older = _save(logs / "version_0" / "checkpoints" / "epoch=0-step=5.ckpt", 5)
    time.sleep(0.01)
    newer = _save(logs / "version_1" / "checkpoints" / "epoch=1-step=9.ckpt", 9)
    assert newest_checkpoint([logs]) == newer
    assert version_of(newer, logs) == "version_1"

    time.sleep(0.01)
    cut = logs / "version_1" / "checkpoints" / "epoch=2-step=12.ckpt"
    cut.write_bytes(newer.read_bytes()[:200])  # a copy that stopped half way
    assert not is_complete_checkpoint(cut)
    assert not is_complete_checkpoint(tmp_path / "missing.ckpt")
    assert newest_checkpoint([logs]) == newer

    newer.unlink()
    cut.unlink()
    assert newest_checkpoint([logs]) == older
    assert newest_checkpoint([tmp_path / "nowhere"]) is None


def test_link_is_replaced_in_place(tmp_path):
    first, second = _save(tmp_path / "a.ckpt", 1), _save(tmp_path / "b.ckpt", 2)
    link = tmp_path / "last.ckpt"
    replace_with_link(first, link)
    replace_with_link(second, link)
    assert os.readlink(link) == "b.ckpt"  # relative, so the folder can move
    assert torch.load(link, weights_only=True)["global_step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.ckpt", "b.ckpt", "last.ckpt"]


def test_resume_flags_are_checked_before_training(tmp_path, digits_root):
    args = ["fit", *_tiny_args(tmp_path, digits_root)]
    with pytest.raises(InputError, match="no such checkpoint"):
        cli_main([*args, "--resume", str(tmp_path / "missing.ckpt")], run=True)
    with pytest.raises(InputError, match="not both"):
        cli_main([*args, "--resume", "auto", "--ckpt_path", "x.ckpt"], run=True)


def test_resume_auto_without_checkpoints_starts_a_new_run(tmp_path, digits_root):
    cli = cli_main([
        "fit", *_tiny_args(tmp_path, digits_root), "--resume", "auto",
        "--trainer.max_steps", "2", "--trainer.limit_val_batches", "0",
    ])  # fmt: skip
    assert cli.trainer.global_step == 2
    assert cli.config.fit.ckpt_path is None

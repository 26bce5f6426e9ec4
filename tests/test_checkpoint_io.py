import os

import pytest
import torch

from lightning_clip.checkpoint_io import AtomicCheckpointIO


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


class _Unpicklable:
    def __reduce__(self):
        raise RuntimeError("disk full")


def test_checkpoint_round_trips(tmp_path):
    path = tmp_path / "run" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 3, "weight": torch.ones(2)}, path)
    loaded = torch.load(path, weights_only=True)
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    assert loaded["step"] == 3 and loaded["weight"].tolist() == [1.0, 1.0]


def test_failed_save_keeps_the_previous_checkpoint_and_no_partial_file(tmp_path):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1}, path)

    with pytest.raises(RuntimeError, match="disk full"):
        io.save_checkpoint({"step": 2, "bad": _Unpicklable()}, path)

    assert torch.load(path, weights_only=True)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]

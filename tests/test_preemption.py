"""Real training processes killed with SIGTERM and SIGKILL, resumed, and compared to one run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from pytorch_lightning import Callback

from lightning_clip.checkpoint_io import AtomicCheckpointIO
from lightning_clip.resume import is_complete_checkpoint
from tests.test_cli import _tiny_args
from tests.test_resume import _subset

REPO = Path(__file__).resolve().parents[1]
STEPS = 24


class StepLog(Callback):
    """Appends each step's loss to a file, and slows steps so a signal lands mid-run."""

    def __init__(self, path: str, seconds: float = 0.15):
        self.path, self.seconds = Path(path), seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        with self.path.open("a") as file:
            file.write(json.dumps([trainer.global_step, outputs["loss"].item()]) + "\n")
        time.sleep(self.seconds)


class SlowCheckpointIO(AtomicCheckpointIO):
    """Writes the whole file, then waits before the rename: a slow disk, to be killed on."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        self.target = Path(path)
        super().save_checkpoint(checkpoint, path, storage_options)

    def write(self, checkpoint, file) -> None:
        super().write(checkpoint, file)
        file.flush()
        marker = self.target.parent / "saves"
        marker.write_text(str(int(marker.read_text() if marker.exists() else 0) + 1))
        time.sleep(3)


def _command(run_dir: Path, digits_root: Path, *extra: str) -> list[str]:
    train_file = _subset(digits_root, run_dir, 142)
    args = _tiny_args(run_dir, digits_root) + [
        "--data.train_file", str(train_file),
        "--trainer.max_steps", str(STEPS),
        "--trainer.max_epochs", "-1",
        "--trainer.limit_val_batches", "1",
        "--seed_everything", "7",
        "--trainer.callbacks+=tests.test_preemption.StepLog",
        f"--trainer.callbacks.path={run_dir / 'losses.jsonl'}",
        *extra,
    ]  # fmt: skip
    return [sys.executable, str(REPO / "train.py"), "fit", *args]


def _start(command: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _wait_for(condition, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _losses(run_dir: Path) -> dict[int, float]:
    """Step -> loss; a step run twice (before a kill and after) must have the same loss."""
    losses = {}
    for line in (run_dir / "losses.jsonl").read_text().splitlines():
        step, loss = json.loads(line)
        assert losses.setdefault(step, loss) == pytest.approx(loss, abs=1e-6), step
    return losses


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    (final,) = run_dir.rglob(f"*step={STEPS}.ckpt")
    return torch.load(final, map_location="cpu", weights_only=False)["state_dict"]


def _assert_same_run(run_dir: Path, reference: Path) -> None:
    assert _losses(run_dir) == pytest.approx(_losses(reference), abs=1e-6, rel=0)
    expected = _weights(reference)
    for name, value in _weights(run_dir).items():
        torch.testing.assert_close(value, expected[name], atol=1e-6, rtol=0, msg=name)


SAVE_EVERY_6 = [
    "--trainer.callbacks+=lightning_clip.callbacks.Checkpoint",
    "--trainer.callbacks.every_n_train_steps=6",
    "--trainer.callbacks.save_top_k=-1",
    "--trainer.callbacks.save_last=link",
]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, digits_root) -> Path:
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    done = subprocess.run(
        _command(run_dir, digits_root, *SAVE_EVERY_6), cwd=REPO, capture_output=True,
        text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(_losses(run_dir)) == STEPS
    return run_dir


@pytest.mark.slow
def test_sigterm_saves_stops_with_requeue_code_and_resumes_exactly(
    tmp_path, digits_root, uninterrupted
):
    preemption = ["--trainer.callbacks+=lightning_clip.callbacks.Preemption", *SAVE_EVERY_6]
    command = _command(tmp_path, digits_root, *preemption)
    process = _start(command)
    log = tmp_path / "losses.jsonl"
    _wait_for(lambda: log.exists() and len(log.read_text().splitlines()) >= 9, process)

    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=300)[0]
    stop_seconds = time.monotonic() - signalled
    assert process.returncode == 75, output[-3000:]
    (preempted,) = tmp_path.rglob("preempted.ckpt")
    stopped_at = torch.load(preempted, map_location="cpu", weights_only=False)["global_step"]
    assert 9 <= stopped_at < STEPS
    print(f"SIGTERM at step {stopped_at}: stopped and saved in {stop_seconds:.2f} s")

    # the same command again, with --resume auto, finishes the run
    resumed = subprocess.run(
        [*command, "--resume", "auto"], cwd=REPO, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=600,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"continuing from {preempted}" in resumed.stderr + resumed.stdout
    _assert_same_run(tmp_path, uninterrupted)


@pytest.mark.slow
def test_sigkill_during_a_save_keeps_the_previous_checkpoint(tmp_path, digits_root, uninterrupted):
    slow_disk = ["--trainer.plugins=tests.test_preemption.SlowCheckpointIO", *SAVE_EVERY_6]
    command = _command(tmp_path, digits_root, *slow_disk)
    process = _start(command)
    saves = tmp_path / "logs" / "clip" / "version_0" / "checkpoints" / "saves"
    # the second save (step 12) is written but not yet renamed into place
    _wait_for(lambda: saves.exists() and saves.read_text() == "2", process)
    process.kill()
    process.wait(timeout=60)

    checkpoints = sorted(path.name for path in tmp_path.rglob("*.ckpt"))
    assert checkpoints == ["epoch=0-step=6.ckpt", "last.ckpt"]
    last = next(tmp_path.rglob("last.ckpt"))
    assert is_complete_checkpoint(last)
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 6
    # the half-finished save is a hidden temporary file, never taken for a checkpoint
    assert len(list(last.parent.glob(".epoch=*-step=12.ckpt.*"))) == 1

    resumed = subprocess.run(
        [*command[:-len(slow_disk)], *SAVE_EVERY_6, "--resume", "auto"], cwd=REPO,
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=600,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_same_run(tmp_path, uninterrupted)


@pytest.mark.slow
def test_slurm_warning_signal_is_handled_like_sigterm(tmp_path, digits_root):
    preemption = [
        "--trainer.callbacks+=lightning_clip.callbacks.Preemption",
        "--trainer.callbacks.signals=[SIGUSR1]",
    ]
    process = _start(_command(tmp_path, digits_root, *preemption))
    log = tmp_path / "losses.jsonl"
    _wait_for(lambda: log.exists() and len(log.read_text().splitlines()) >= 3, process)
    process.send_signal(signal.SIGUSR1)
    output = process.communicate(timeout=300)[0]
    assert process.returncode == 75, output[-3000:]
    (preempted,) = tmp_path.rglob("preempted.ckpt")
    assert is_complete_checkpoint(preempted)

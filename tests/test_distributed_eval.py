"""Validation metrics of one checkpoint are the same on one CPU process and on two (DDP)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lightning_clip.cli import cli_main
from tests.test_cli import _tiny_args, _tiny_checkpoint, _zeroshot_callback

REPO = Path(__file__).resolve().parents[1]

VALIDATE_SCRIPT = """
import json, sys
from lightning_clip.cli import cli_main

cli = cli_main(sys.argv[1:-1])
if cli.trainer.global_rank == 0:
    metrics = {key: float(value) for key, value in cli.trainer.callback_metrics.items()}
    json.dump(metrics, open(sys.argv[-1], "w"))
"""


def _validate(script: Path, args: list[str], devices: int, output: Path) -> dict[str, float]:
    strategy = ["--trainer.strategy", "ddp"] if devices > 1 else []
    command = [sys.executable, str(script), "validate", *args]
    command += ["--trainer.devices", str(devices), *strategy, str(output)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(output.read_text())


@pytest.mark.slow
def test_validation_metrics_match_on_one_and_two_processes(tmp_path, digits_root):
    # an odd number of validation images, so the distributed sampler must pad a shard
    common = _tiny_args(tmp_path, digits_root) + _zeroshot_callback(digits_root) + [
        "--data.val_fraction", "0.0995",
        "--data.eval_batch_size", "16",
        "--trainer.callbacks+=lightning_clip.callbacks.RetrievalEval",
    ]  # fmt: skip
    fit = cli_main([
        "fit", *common,
        "--trainer.max_epochs", "1",
        "--trainer.limit_train_batches", "4",
        "--trainer.callbacks+=pytorch_lightning.callbacks.ModelCheckpoint",
    ])  # fmt: skip
    assert len(fit.datamodule.val_records) % 2 == 1
    checkpoint = fit.trainer.checkpoint_callback.best_model_path

    script = tmp_path / "validate.py"
    script.write_text(VALIDATE_SCRIPT)
    args = [*common, "--ckpt_path", checkpoint]
    one = _validate(script, args, 1, tmp_path / "one.json")
    two = _validate(script, args, 2, tmp_path / "two.json")

    keys = [key for key in one if key.startswith(("zeroshot/", "val/image_to", "val/text_to"))]
    assert len(keys) == 13  # 6 recalls, 4 ranks, 3 zero-shot metrics
    for key in keys:
        assert two[key] == pytest.approx(one[key], abs=1e-6), key


def _eval(checkpoint: str, sets: Path, devices: int, output: Path) -> dict[str, float]:
    command = [sys.executable, "eval.py", "--config", str(sets), "--checkpoint", checkpoint]
    command += ["--accelerator", "cpu", "--devices", str(devices), "--output", str(output)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("| zeroshot/digits/top1 |") == 1  # one table, from rank zero
    return json.loads(output.read_text())["results"]


@pytest.mark.slow
def test_eval_script_gives_the_same_numbers_on_one_and_two_processes(tmp_path, digits_root):
    checkpoint = _tiny_checkpoint(tmp_path, digits_root, train_batches=6)
    sets = tmp_path / "sets.yaml"
    sets.write_text(
        "zeroshot:\n"
        f"  - {{name: digits, images: {digits_root / 'heldout.csv'},\n"
        f"     class_names: {digits_root / 'classes.txt'},\n"
        f"     templates: {REPO / 'conf/zeroshot/digits_templates.txt'}}}\n"
        "retrieval:\n"
        f"  - {{name: captions, captions: {digits_root / 'captions.csv'}}}\n"
    )

    one = _eval(checkpoint, sets, 1, tmp_path / "one.json")
    two = _eval(checkpoint, sets, 2, tmp_path / "two.json")

    assert one.keys() == two.keys()
    assert len(one) == 3 + 6 + 4 + 2  # zero-shot, recalls, ranks, gallery counts
    assert one["retrieval/captions/images"] == 1438  # every image once, none repeated
    assert one["zeroshot/digits/top1"] > 0.0
    for key, value in one.items():
        assert two[key] == pytest.approx(value, abs=1e-6), key

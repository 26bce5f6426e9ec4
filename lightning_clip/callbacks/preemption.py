"""Preemption: on SIGTERM or a scheduler's warning signal, checkpoint, stop and ask to be requeued.

Lightning notices SIGTERM and stops at the end of the current training step (every rank at
the same step). This callback then writes `preempted.ckpt` into the checkpoint folder, and
`train.py` exits with `exit_code` (75, EX_TEMPFAIL: "try again later"), which a job script
turns into a requeue. Other signals it is given (SLURM sends SIGUSR1 with
``#SBATCH --signal=USR1@120``) are treated as SIGTERM. Restart with ``--resume auto``.
"""

import logging
import signal
from pathlib import Path

from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)

REQUEUE_EXIT_CODE = 75


def checkpoint_dir(trainer: Trainer) -> Path:
    """The folder ModelCheckpoint writes to, or `<log dir>/checkpoints` without one."""
    callback = trainer.checkpoint_callback
    if callback is not None and callback.dirpath:
        return Path(callback.dirpath)
    return Path(trainer.log_dir or trainer.default_root_dir) / "checkpoints"


class Preemption(Callback):
    """Save `preempted.ckpt` when the run is told to stop, and exit with a requeue code."""

    def __init__(self, signals: list[str] | None = None, exit_code: int = REQUEUE_EXIT_CODE):
        """
        Args:
            signals: Signals, besides SIGTERM, that mean "stop soon", e.g. ``[SIGUSR1]``.
            exit_code: Exit status of `train.py` after a preemption checkpoint was written.
        """
        super().__init__()
        self.signals = [getattr(signal, name) for name in (signals or [])]
        self.exit_code = exit_code
        self.saved: Path | None = None

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        for signum in self.signals:
            # Lightning's own SIGTERM handling then stops every rank at the same step
            signal.signal(signum, lambda *_: signal.raise_signal(signal.SIGTERM))

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        if not isinstance(exception, SIGTERMException):
            return
        path = checkpoint_dir(trainer) / "preempted.ckpt"
        # every rank takes part (sharded strategies gather state); rank zero writes
        trainer.save_checkpoint(path)
        self.saved = path
        exception.requeue_exit_code = self.exit_code
        exception.checkpoint = path
        if trainer.is_global_zero:
            log.warning(
                f"stopped by a signal at step {trainer.global_step}; checkpoint: {path}; "
                f"exiting with {self.exit_code} so the job can be requeued (resume: --resume auto)"
            )

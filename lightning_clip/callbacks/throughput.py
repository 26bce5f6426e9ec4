"""Throughput: training samples per second and time spent waiting for data, every step."""

import time

from pytorch_lightning import Callback

from lightning_clip import metrics


class Throughput(Callback):
    """Logs samples/s over the whole step and the seconds the step waited for its batch.

    Both are of the steps the loggers write (every `log_every_n_steps`), not averages.
    """

    def __init__(self):
        super().__init__()
        self._last_end: float | None = None
        self._start: float | None = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        # the first batch of an epoch includes worker start-up; time it from here
        self._last_end = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        end = time.perf_counter()
        batch_size = batch["image"].shape[0]
        step_seconds = max(end - self._last_end, 1e-9)
        data_wait = self._start - self._last_end
        self._last_end = end
        if metrics.step_is_written(trainer):
            pl_module.log(metrics.TRAIN_SAMPLES_PER_SECOND, batch_size / step_seconds, batch_size=1)
            pl_module.log(metrics.TRAIN_DATA_WAIT, data_wait, batch_size=1)

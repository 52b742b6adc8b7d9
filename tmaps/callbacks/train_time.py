"""Seconds spent training, logged with every validation, for learning curves against training cost and wall time."""

from __future__ import annotations

import time

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback


class TrainTime(Callback):
    """Log, at every validation, ``time/train_s`` and ``time/elapsed_s``.

    ``time/train_s`` is the seconds spent in training batches so far. A batch counts from
    ``on_train_batch_start`` to ``on_train_batch_end``: forward, backward and optimizer step.
    Validation, checkpoints and figures are left out, so that runs which validate and log alike
    compare by their training cost (a frozen layer saves its backward pass).

    ``time/elapsed_s`` is the wall-clock seconds from ``since`` to the start of this validation,
    less the time spent in earlier validations (the sanity check included): the time to reach this
    point of training as a run that never validated would take it, start-up, data loading and
    everything else included (``benchmarks/time_to_quality.py``). It restarts on a resumed run.

    Args:
        since: a ``time.time()`` timestamp from which ``time/elapsed_s`` counts, such as the moment a
            parent process launched this run; ``None``: when the callback was made.
    """

    def __init__(self, since: float | None = None) -> None:
        self.seconds = 0.0
        self._batch_start: float | None = None
        self.since = time.time() if since is None else since
        self.validation_seconds = 0.0
        self._validation_start: float | None = None

    def state_dict(self) -> dict:
        return {"seconds": self.seconds}

    def load_state_dict(self, state_dict: dict) -> None:
        self.seconds = state_dict["seconds"]

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        self._batch_start = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int) -> None:
        if self._batch_start is not None:
            self.seconds += time.perf_counter() - self._batch_start
            self._batch_start = None

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._validation_start = time.time()

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            pl_module.log("time/train_s", self.seconds)
            pl_module.log("time/elapsed_s", self._validation_start - self.since - self.validation_seconds)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.validation_seconds += time.time() - self._validation_start

"""Seconds spent training, logged with every validation, for learning curves against wall time."""

from __future__ import annotations

import time

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback


class TrainTime(Callback):
    """Log ``time/train_s``, the seconds spent in training batches so far, at every validation.

    A batch counts from ``on_train_batch_start`` to ``on_train_batch_end``: forward, backward
    and optimizer step. Validation, checkpoints and figures are left out, so that runs which
    validate and log alike compare by their training cost (a frozen layer saves its backward pass).
    """

    def __init__(self) -> None:
        self.seconds = 0.0
        self._batch_start: float | None = None

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

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            pl_module.log("time/train_s", self.seconds)

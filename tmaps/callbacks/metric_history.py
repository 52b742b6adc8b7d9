"""The run's scalar metrics as a CSV file in the run folder, whatever the logger: the report page draws it."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_only

COLUMNS = ("step", "epoch", "metric", "value")


class MetricHistory(Callback):
    """Write every scalar metric to ``<default_root_dir>/metrics.csv`` (columns ``step, epoch, metric, value``).

    Training metrics (``train/...``) are read every ``every_n_steps`` optimizer steps, all
    others (validation, topography) at the end of each validation run, outside the sanity
    check. The file is rewritten after each validation, rank zero only. The history is part
    of the checkpoint, so a resumed run's file holds the whole run.

    Args:
        every_n_steps: how often training metrics are read.
    """

    def __init__(self, every_n_steps: int = 10) -> None:
        if every_n_steps < 1:
            raise ValueError(f"MetricHistory every_n_steps must be >= 1, got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self.rows: list[tuple[int, int, str, float]] = []

    def state_dict(self) -> dict:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict) -> None:
        self.rows = [tuple(row) for row in state_dict["rows"]]

    def _record(self, trainer: pl.Trainer, training: bool) -> None:
        for name, value in trainer.callback_metrics.items():
            if name.startswith("train/") == training and torch.is_tensor(value) and value.numel() == 1:
                number = float(value)
                if math.isfinite(number):
                    self.rows.append((trainer.global_step, trainer.current_epoch, name, number))

    @rank_zero_only
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int) -> None:
        if trainer.global_step % self.every_n_steps == 0:
            self._record(trainer, training=True)

    @rank_zero_only
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._record(trainer, training=False)
        self.write(Path(trainer.default_root_dir) / "metrics.csv")

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(COLUMNS)
            writer.writerows(self.rows)
        return path

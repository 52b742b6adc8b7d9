"""Send figures and tables to whichever Lightning loggers are active, and keep PNG copies.

Works with W&B, TensorBoard, CSV or no logger at all: every figure is also written as a PNG
under ``<run dir>/figures/`` so that a run can be looked at without any logging service.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from pytorch_lightning.loggers import Logger, TensorBoardLogger, WandbLogger  # noqa: E402

from tmaps.extras import require  # noqa: E402
from tmaps.introspect.render import figure_image, save_figure  # noqa: E402


def figure_path(run_dir: str | Path, key: str, step: int) -> Path:
    """``<run_dir>/figures/<key with / as __>/step<step>.png``."""
    safe_key = re.sub(r"[^\w.-]+", "__", key)
    return Path(run_dir) / "figures" / safe_key / f"step{step:07d}.png"


def log_figure(
    loggers: Sequence[Logger], key: str, figure: Figure, step: int, run_dir: str | Path | None
) -> Path | None:
    """Log ``figure`` under ``key`` to every logger, save it as a PNG, close it; return the PNG path."""
    path = None
    if run_dir is not None:
        path = save_figure(figure, figure_path(run_dir, key, step))
    image = figure_image(figure) if loggers else None
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[image], step=step)
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, image, global_step=step, dataformats="HWC")
    plt.close(figure)
    return path


def log_table(loggers: Sequence[Logger], key: str, columns: list[str], rows: list[list], step: int) -> None:
    """A table to W&B, or as Markdown text to TensorBoard; other loggers have no tables."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.log_table(key=key, columns=columns, data=rows, step=step)
        elif isinstance(logger, TensorBoardLogger):
            header = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
            body = "".join("| " + " | ".join(str(cell) for cell in row) + " |\n" for row in rows)
            logger.experiment.add_text(key, header + body, global_step=step)


def tensorboard_logger(**options) -> TensorBoardLogger:
    """Lightning's ``TensorBoardLogger`` (``logger=tensorboard``), or an error naming the ``tensorboard`` extra."""
    require("tensorboard", extra="tensorboard", feature="logger=tensorboard (and logger=many)")
    return TensorBoardLogger(**options)

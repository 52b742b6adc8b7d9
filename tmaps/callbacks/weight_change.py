"""How far each layer moves from where training started, logged every epoch.

After a transfer, the start is the source model (with its output layer moved to the new
alphabet), so the figures show which layers the new language changes and which it keeps
(Kunze et al., 2017, section 5).
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib
import numpy as np
import pytorch_lightning as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_only
from torch import Tensor

from tmaps.callbacks.base import EvolutionGifs, trained_grids
from tmaps.introspect.weights import LayerChange, layer_weights, weight_change
from tmaps.topo import Grid
from tmaps.training.loggers import log_figure


class WeightChange(Callback):
    """Log per-layer weight change relative to the weights at the start of ``fit``.

    Every ``every_n_epochs`` training epochs (rank zero only, with or without a logger) it logs

    - the scalars ``weights/relative_change/<layer>`` (``||W_t - W_0|| / ||W_0||``);
    - ``weights/change_heatmap``: layers x epochs;
    - ``weights/change_lines``: relative change against epoch, one line per layer;
    - ``weights/filter_cosine``: per layer, the distribution of each filter's cosine
      similarity to its start;
    - ``weights/change_map/<layer>`` for every topographic layer (the grids of ``pl_module.topo``):
      each filter's relative change at its grid cell;

    and, at the end of ``fit``, ``figures/weights__change_map__<layer>/evolution.gif``: the map's
    evolution over the epochs. The starting weights and the history are part of the
    callback's checkpoint state, so a resumed run goes on measuring from the same start.

    Args:
        layer_names: the layers to follow; ``None`` takes ``model.layer_names``.
        every_n_epochs: log every this many epochs.
        gif_frame_ms: how long each epoch's frame shows in the GIF.
    """

    def __init__(self, layer_names: Sequence[str] | None = None, every_n_epochs: int = 1, gif_frame_ms: int = 500) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"WeightChange every_n_epochs must be >= 1, got {every_n_epochs}")
        self.layer_names = list(layer_names) if layer_names else None
        self.every_n_epochs = every_n_epochs
        self.gifs = EvolutionGifs(gif_frame_ms)
        self.initial: dict[str, Tensor] | None = None
        self.epochs: list[int] = []
        self.history: list[list[float]] = []

    def state_dict(self) -> dict:
        return {"initial": self.initial, "epochs": self.epochs, "history": self.history}

    def load_state_dict(self, state_dict: dict) -> None:
        self.initial, self.epochs, self.history = state_dict["initial"], state_dict["epochs"], state_dict["history"]

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.initial is None:
            weights = layer_weights(pl_module.model, self.layer_names)
            self.initial = {f"{name}.weight": weight.detach().cpu().clone() for name, weight in weights.items()}

    @rank_zero_only
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        if (epoch + 1) % self.every_n_epochs:
            return
        changes = weight_change(self.initial, pl_module.model)
        self.epochs.append(epoch)
        self.history.append([change.relative_change for change in changes.values()])
        step = trainer.global_step
        for logger in trainer.loggers:
            logger.log_metrics({f"weights/relative_change/{name}": change.relative_change for name, change in changes.items()}, step=step)
        names = list(changes)
        run_dir = trainer.default_root_dir
        log_figure(trainer.loggers, "weights/change_heatmap", self.heatmap(names), step, run_dir)
        log_figure(trainer.loggers, "weights/change_lines", self.lines(names), step, run_dir)
        log_figure(trainer.loggers, "weights/filter_cosine", cosine_distributions(changes, epoch), step, run_dir)
        for name, grid in trained_grids(pl_module).items():
            if name not in changes:
                continue
            self.gifs.log(trainer, f"weights/change_map/{name}", change_map(name, changes[name], grid, epoch))

    @rank_zero_only
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.gifs.write(trainer.default_root_dir)

    def heatmap(self, layer_names: Sequence[str]) -> Figure:
        """Relative change, layers (rows) x logged epochs (columns)."""
        values = np.array(self.history).T
        figure = agg_figure((2.5 + 0.4 * len(self.epochs), 1.0 + 0.3 * len(layer_names)))
        axes = figure.add_subplot()
        image = axes.imshow(values, aspect="auto", cmap="magma", interpolation="nearest")
        axes.set_yticks(range(len(layer_names)), layer_names)
        axes.set_xticks(range(len(self.epochs)), [str(epoch) for epoch in self.epochs])
        axes.set_xlabel("epoch")
        axes.set_title("relative weight change ||W - W0|| / ||W0||")
        figure.colorbar(image, ax=axes)
        return figure

    def lines(self, layer_names: Sequence[str]) -> Figure:
        """Relative change against epoch, one line per layer."""
        figure = agg_figure((7, 4.5))
        axes = figure.add_subplot()
        values = np.array(self.history)
        for index, name in enumerate(layer_names):
            axes.plot(self.epochs, values[:, index], marker="o", label=name)
        axes.set_xlabel("epoch")
        axes.set_ylabel("||W - W0|| / ||W0||")
        axes.set_title("relative weight change per layer")
        axes.legend(fontsize="small", ncol=2)
        return figure


def agg_figure(size: tuple[float, float]) -> Figure:
    """A figure with its own Agg canvas, so that it renders to pixels without pyplot."""
    figure = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def cosine_distributions(changes: dict[str, LayerChange], epoch: int) -> Figure:
    """Per layer, a box plot of the filters' cosine similarity to their start (NaN filters left out)."""
    names = list(changes)
    cosines = [change.filter_cosine[~change.filter_cosine.isnan()].numpy() for change in changes.values()]
    figure = agg_figure((1.5 + 0.6 * len(names), 4))
    axes = figure.add_subplot()
    axes.boxplot(cosines, tick_labels=names, showfliers=True, flierprops={"markersize": 2})
    axes.set_ylabel("cosine(w_t, w_0) per filter")
    axes.set_title(f"filter direction kept, epoch {epoch}")
    axes.tick_params(axis="x", labelrotation=45)
    return figure


def change_map(layer: str, change: LayerChange, grid: Grid, epoch: int) -> Figure:
    """Each filter's relative change drawn at its grid cell (NaN filters grey)."""
    figure = agg_figure((min(12.0, 2.5 + 0.35 * grid.cols), min(10.0, 1.0 + 0.35 * grid.rows)))
    axes = figure.add_subplot()
    cmap = matplotlib.colormaps["magma"].with_extremes(bad="lightgrey")
    image = axes.imshow(grid.sheet(change.filter_change).numpy(), cmap=cmap, interpolation="nearest")
    figure.colorbar(image, ax=axes, label="||w - w0|| / ||w0||")
    axes.set_title(f"{layer}: filter change, epoch {epoch}")
    axes.set_xlabel("grid column")
    axes.set_ylabel("grid row")
    return figure


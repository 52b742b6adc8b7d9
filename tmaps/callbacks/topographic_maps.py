"""Filter maps and activation maps of the topographic layers, logged as training goes on."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pytorch_lightning as pl

from tmaps.callbacks.base import MapCallback, layer_grid, topographic_layers
from tmaps.introspect import NAP, Panels, Profiles
from tmaps.introspect.forward import to_model_device
from tmaps.topo import filter_map

log = logging.getLogger(__name__)


def valid_frame_mean(profiles: Profiles, layer: str) -> np.ndarray:
    """Each unit's mean activation ``(U,)`` over every frame the profiles counted: the valid frames, never padding."""
    profile = profiles[layer]
    return (profile.raw_mean * profile.counts[:, None]).sum(0) / profile.counts.sum()


class TopographicMaps(MapCallback):
    """Filter maps and activation maps of the topographic layers every ``every_n_epochs`` epochs.

    For each layer it logs

    - ``maps/filters/<layer>``: :func:`tmaps.topo.filter_map` on the layer's grid (mel
      centre of mass for the first layer, filter PCs as RGB for the others);
    - ``maps/activations/<layer>``: the mean activation of each unit over the valid frames
      of the probe set (see :class:`MapCallback`; ``NAP`` grouped by utterance id, in eval
      mode), drawn with :func:`tmaps.introspect.render.plot_rendered` on the learned grid
      (``layout="grid"``) or on another layout of :data:`tmaps.introspect.LAYOUTS`, computed
      from the units' per-utterance profiles and aligned onto the previous epoch's;

    and a GIF of each map at the end of ``fit``. Everything runs on rank zero only.

    Args:
        layers: the layers to draw; ``None`` takes the topographic layers of the module
            (``hparams.topo["layers"]``), and a module without any gets no maps.
        layout, every_n_epochs, n_probe_utterances, probe_batch_size, gif_frame_ms, seed: see
            :class:`MapCallback`.
    """

    def __init__(
        self,
        layers: Sequence[str] | None = None,
        layout: str = "grid",
        every_n_epochs: int = 1,
        n_probe_utterances: int = 8,
        probe_batch_size: int = 8,
        gif_frame_ms: int = 500,
        seed: int = 0,
    ) -> None:
        super().__init__(layers, layout, every_n_epochs, n_probe_utterances, probe_batch_size, gif_frame_ms, seed)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.layers is None:
            self.layers = topographic_layers(pl_module)
        if not self.layers:
            log.info("TopographicMaps: the module has no topographic layers and none were given; no maps")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not (self.layers and trainer.is_global_zero and self.due(trainer)):
            return
        model = pl_module.model
        epoch = trainer.current_epoch
        batches = [to_model_device(model, batch) for batch in self.probe_batches(trainer)]
        for layer in self.layers:
            figure = filter_map(model, layer, layer_grid(pl_module, layer))
            figure.axes[0].set_title(f"{figure.axes[0].get_title()}, epoch {epoch}")
            self.log_map(trainer, f"maps/filters/{layer}", figure)
        profiles = NAP(model, self.layers).compute(batches, "id")
        for layer in self.layers:
            mean_activation = valid_frame_mean(profiles, layer)
            options = {"shape": layer_grid(pl_module, layer).shape} if self.layout == "grid" else {}
            coords = self.layout_of(layer, profiles.matrix(layer), **options)
            title = f"{layer}: mean activation on the {self.layout} layout, epoch {epoch}"
            self.log_values(
                trainer, f"maps/activations/{layer}", coords, mean_activation[None], Panels(["probe set"]), title, "mean activation over the valid frames"
            )

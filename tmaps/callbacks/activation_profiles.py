"""Neuron activation profiles of a probe set during training: maps per layer and the ARI-by-layer curve."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch.distributed as dist
from torch import nn

from tmaps.callbacks.base import MapCallback, layer_grid, topographic_layers
from tmaps.introspect import ATTRIBUTIONS, Profiler, Profiles, adjusted_rand_by_layer, plot_adjusted_rand, resolve_grouping
from tmaps.introspect.forward import to_model_device
from tmaps.introspect.quality import layout_quality
from tmaps.training.loggers import log_figure, log_table

log = logging.getLogger(__name__)

class ActivationProfiles(MapCallback):
    """NAPs or GradNAPs of a probe set every ``every_n_epochs`` epochs, with their maps and ARIs.

    Each time it logs

    - ``profiles/map/<layer>`` for every map layer: one map per group (phoneme, ...) of the
      layer's profiles (:func:`tmaps.introspect.render.plot_rendered`) on a layout of its units, titled and
      ordered as the grouping says (``Grouping.panels``: phonemes in IPA by phonetic class); the
      ``"grid"`` layout is the grid the layer is trained on (for a plain layer, its channels
      in order on ``Grid(n_units)``, see :func:`~tmaps.callbacks.base.layer_grid`), other layouts (:data:`tmaps.introspect.LAYOUTS`) are recomputed from the
      profiles and aligned onto the previous epoch's;
    - with groups that have reference classes (``Grouping.reference``: phoneme classes of
      phoneme groups), ``profiles/adjusted_rand``: how well clusters of each layer's profiles
      recover them (:func:`tmaps.introspect.adjusted_rand_by_layer`),
      as a curve over the layers, as scalars ``profiles/adjusted_rand/<layer>`` and as the
      table ``profiles/adjusted_rand_table`` (epoch, layer, ARI) of all epochs so far;
    - ``profiles/layout_quality``: per map layer, how well its layout keeps the profiles'
      neighbourhoods and how smooth its maps are (:func:`tmaps.introspect.layout_quality`),
      a table of all epochs so far, also written as ``<default_root_dir>/profiles/layout_quality.csv``;
    - ``<default_root_dir>/profiles/<kind>_step<step>.npz``: the profiles
      (:meth:`tmaps.introspect.Profiles.save`), for later analysis;

    and a GIF of each map at the end of ``fit``.

    Under distributed training every rank profiles its share of the probe batches (rank
    ``r`` takes batches ``r, r + world_size, ...``), after taking rank zero's BatchNorm
    statistics as DDP does before each forward pass; the sums are added across ranks
    (:meth:`Profiles.all_reduce`), and rank zero draws and logs. So the profiles equal those
    of one process over the whole probe set.

    Args:
        layers: the layers profiled (and on the ARI curve); ``None`` takes ``model.layer_names``
            and the map layers inside them (units inside a block, such as a conformer's
            feed-forward units).
        map_layers: the layers drawn as maps; ``None`` takes the topographic layers of the
            module (none for a plain model). A map has a panel per group and takes seconds
            to draw.
        kind: ``"nap"`` (activations) or ``"gradnap"`` (activation x gradient, see
            :class:`tmaps.introspect.GradNAP`).
        groups: a grouping of :func:`tmaps.introspect.resolve_grouping` (``"phoneme"``,
            ``"phoneme_class"``, ``"character"``, ``"word"`` or a record field).
        normalize: profile normalization (``"center"``, ``"zscore"`` or ``None``).
        layout, every_n_epochs, n_probe_utterances, probe_batch_size, gif_frame_ms, seed: see
            :class:`~tmaps.callbacks.base.MapCallback`.
    """

    def __init__(
        self,
        layers: Sequence[str] | None = None,
        map_layers: Sequence[str] | None = None,
        kind: str = "nap",
        groups: str = "phoneme",
        layout: str = "grid",
        normalize: str | None = "center",
        every_n_epochs: int = 2,
        n_probe_utterances: int = 32,
        probe_batch_size: int = 8,
        gif_frame_ms: int = 500,
        seed: int = 0,
    ) -> None:
        super().__init__(layers, layout, every_n_epochs, n_probe_utterances, probe_batch_size, gif_frame_ms, seed)
        if kind not in ATTRIBUTIONS:
            raise ValueError(f"ActivationProfiles kind must be one of {sorted(ATTRIBUTIONS)}, got {kind!r}")
        self.map_layers = list(map_layers) if map_layers is not None else None
        self.kind = kind
        self.groups = groups
        self.normalize = normalize
        self.adjusted_rand_rows: list[list] = []
        self.layout_quality_rows: list[dict] = []

    @property
    def state_key(self) -> str:
        return self._generate_state_key(kind=self.kind, groups=self.groups, layout=self.layout, every_n_epochs=self.every_n_epochs)

    def state_dict(self) -> dict:
        return {"adjusted_rand_rows": self.adjusted_rand_rows, "layout_quality_rows": self.layout_quality_rows}

    def load_state_dict(self, state_dict: dict) -> None:
        self.adjusted_rand_rows = state_dict["adjusted_rand_rows"]
        self.layout_quality_rows = state_dict.get("layout_quality_rows", [])

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.map_layers is None:
            self.map_layers = topographic_layers(pl_module)
        if self.layers is None:
            names = list(pl_module.model.layer_names)
            self.layers = names + [layer for layer in self.map_layers if layer not in names]
        unknown = sorted(set(self.map_layers) - set(self.layers))
        if unknown:
            raise ValueError(f"ActivationProfiles map_layers {unknown} are not among the profiled layers {self.layers}")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.due(trainer):
            return
        profiles = self.compute(trainer, pl_module.model)
        if trainer.is_global_zero:
            self.log_profiles(trainer, pl_module, profiles)

    def compute(self, trainer: pl.Trainer, model: nn.Module) -> Profiles:
        """The profiles of the whole probe set; under DDP every rank must call this at once."""
        batches = self.probe_batches(trainer)
        world_size, rank = trainer.world_size, trainer.global_rank
        if len(batches) < world_size:
            raise ValueError(
                f"ActivationProfiles has {len(batches)} probe batches for {world_size} ranks; raise n_probe_utterances "
                f"({self.n_probe_utterances}) or lower probe_batch_size ({self.probe_batch_size})"
            )
        if dist.is_available() and dist.is_initialized():
            for buffer in model.buffers():
                dist.broadcast(buffer, src=0)
        shard = [to_model_device(model, batch) for batch in batches[rank::world_size]]
        with warnings.catch_warnings():
            # Groups that the probe set lacks are expected on a small probe set.
            warnings.filterwarnings("ignore", message="groups without frames")
            profiles = Profiler(model, self.layers, ATTRIBUTIONS[self.kind]()).compute(shard, self.groups, normalize=self.normalize)
        return profiles.all_reduce()

    def log_profiles(self, trainer: pl.Trainer, pl_module: pl.LightningModule, profiles: Profiles) -> None:
        epoch, step, run_dir = trainer.current_epoch, trainer.global_step, trainer.default_root_dir
        path = Path(run_dir) / "profiles" / f"{self.kind}_step{step:07d}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        profiles.save(path)
        label = ATTRIBUTIONS[self.kind].kind
        panels = profiles.panels(getattr(trainer.datamodule, "language", "en"))
        for layer in self.map_layers:
            options = {"shape": layer_grid(pl_module, layer).shape} if self.layout == "grid" else {}
            coords = self.layout_of(layer, profiles.matrix(layer), **options)
            title = f"{layer}: {label}s by {self.groups} on a {self.layout} layout, epoch {epoch}"
            self.log_values(trainer, f"profiles/map/{layer}", coords, profiles[layer].mean, panels, title, profiles.quantity)
            self.record_layout_quality(epoch, layer, profiles.matrix(layer), coords)
        if self.map_layers:
            table = pd.DataFrame(self.layout_quality_rows)
            table.to_csv(path.parent / "layout_quality.csv", index=False)
            log_table(trainer.loggers, "profiles/layout_quality", list(table.columns), table.values.tolist(), step)
        reference = resolve_grouping(self.groups).reference
        if reference is None:
            return
        try:
            scores = adjusted_rand_by_layer(profiles, reference)
        except ValueError as error:  # e.g. a layer whose profiles are all zero before it learned anything
            log.warning("ActivationProfiles: no adjusted Rand index at epoch %d: %s", epoch, error)
            return
        for logger in trainer.loggers:
            logger.log_metrics({f"profiles/adjusted_rand/{layer}": score for layer, score in scores.items()}, step=step)
        title = f"{label} clusters vs the reference classes of {self.groups}s, epoch {epoch}"
        log_figure(trainer.loggers, "profiles/adjusted_rand", plot_adjusted_rand(scores, title), step, run_dir)
        self.adjusted_rand_rows += [[epoch, layer, score] for layer, score in scores.items()]
        log_table(trainer.loggers, "profiles/adjusted_rand_table", ["epoch", "layer", "adjusted_rand"], self.adjusted_rand_rows, step)

    def record_layout_quality(self, epoch: int, layer: str, matrix: np.ndarray, coords: np.ndarray) -> None:
        """A row of :func:`tmaps.introspect.layout_quality` of ``layer``'s layout (10 neighbours, fewer on a small layer)."""
        scores = layout_quality(matrix, coords, n_neighbors=max(1, min(10, len(matrix) // 2 - 1)))
        self.layout_quality_rows.append({"epoch": epoch, "layer": layer, "layout": self.layout} | scores)


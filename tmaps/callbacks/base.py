"""What the map callbacks share (:class:`MapCallback`): when to draw, the fixed probe set of
utterances, logging to the active loggers with PNG copies, colour scales shared across
epochs, the GIFs of each map's evolution written at the end of ``fit``, and the grids of the
module's layers.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
from matplotlib.figure import Figure
from PIL import Image
from pytorch_lightning.callbacks import Callback
from torch.utils.data import DataLoader

from tmaps.introspect import LAYOUTS, compute_layout
from tmaps.introspect.groups import Panels
from tmaps.introspect.render import COLOUR_PERCENTILE, ColourScale, MapFrame, MapStyle, figure_image, save_gif
from tmaps.topo import Grid
from tmaps.topo.layers import filter_vectors, get_layer
from tmaps.training.loggers import figure_path, log_figure

log = logging.getLogger(__name__)


class MapCallback(Callback):
    """Base of the map callbacks: schedule, probe set, logging and GIFs.

    Maps are drawn at the end of every ``every_n_epochs``-th training epoch (so never during
    the sanity check, which only validates). Figures go to every logger of the trainer
    (W&B ``log_image``, TensorBoard ``add_image``) and, as PNG, to
    ``<default_root_dir>/figures/<key>/step<step>.png``, from rank zero only; without a logger
    only the PNGs are written. At the end of ``fit``, each map's frames become
    ``figures/<key>/evolution.gif``.

    Maps of values (:meth:`log_values`) share one symmetric colour scale across epochs: each
    epoch's figure uses the largest ``|value|`` of that map so far, and the GIF is redrawn at
    the end on the largest of the whole run, so that its frames compare directly.

    The probe set is ``n_probe_utterances`` utterances of the validation set (of the training
    set when there is none): those nearest to the median duration, so that padding is small,
    in batches of ``probe_batch_size`` of similar length. It is chosen at the first map and
    kept for the whole run, so that every frame of a GIF shows the same inputs.

    Args:
        layers: the layers to draw.
        layout: ``"grid"`` or another key of :data:`tmaps.introspect.LAYOUTS`.
        every_n_epochs: draw every this many training epochs.
        n_probe_utterances: utterances of the probe set.
        probe_batch_size: utterances per probe batch.
        gif_frame_ms: how long each frame shows in the GIFs.
        seed: seed of stochastic layouts.
    """

    def __init__(
        self,
        layers: Sequence[str] | None,
        layout: str,
        every_n_epochs: int,
        n_probe_utterances: int,
        probe_batch_size: int,
        gif_frame_ms: int,
        seed: int,
    ) -> None:
        for name, value in (("every_n_epochs", every_n_epochs), ("n_probe_utterances", n_probe_utterances), ("probe_batch_size", probe_batch_size)):
            if value < 1:
                raise ValueError(f"{type(self).__name__} {name} must be >= 1, got {value}")
        if layout not in LAYOUTS:
            raise ValueError(f"{type(self).__name__} layout must be one of {sorted(LAYOUTS)}, got {layout!r}")
        self.layers = list(layers) if layers is not None else None
        self.layout = layout
        self.every_n_epochs = every_n_epochs
        self.n_probe_utterances = n_probe_utterances
        self.probe_batch_size = probe_batch_size
        self.seed = seed
        self.gifs = EvolutionGifs(gif_frame_ms)
        self.style = MapStyle()
        self._probe: list[dict] | None = None
        self._coords: dict[str, np.ndarray] = {}

    def due(self, trainer: pl.Trainer) -> bool:
        """Whether this training epoch gets maps."""
        return not trainer.sanity_checking and (trainer.current_epoch + 1) % self.every_n_epochs == 0

    def probe_batches(self, trainer: pl.Trainer) -> list[dict]:
        """The probe set as batch dicts (docs/design.md), chosen on the first call."""
        if self._probe is None:
            self._probe = probe_batches(probe_loader(trainer), self.n_probe_utterances, self.probe_batch_size)
        return self._probe

    def layout_of(self, layer: str, profiles: np.ndarray, **options) -> np.ndarray:
        """``layout`` of ``layer``'s units ``(U, 2)`` from ``profiles (U, G)``, aligned onto its previous layout."""
        coords = compute_layout(self.layout, profiles, reference=self._coords.get(layer), seed=self.seed, **options)
        self._coords[layer] = coords
        return coords

    def log_map(self, trainer: pl.Trainer, key: str, figure: Figure) -> None:
        """Log a map figure (rank zero) and keep it as a frame of the key's GIF."""
        self.gifs.log(trainer, key, figure)

    def log_values(
        self, trainer: pl.Trainer, key: str, coords: np.ndarray, values: np.ndarray, panels: Panels, title: str, colorbar_label: str
    ) -> None:
        """Log the maps of ``values (G, U)`` over the layout ``coords (U, 2)``, one panel per group as ``panels`` say, on
        the key's colour scale so far (:meth:`EvolutionGifs.log_values`); ``colorbar_label`` names the quantity."""
        self.gifs.log_values(trainer, key, MapFrame(self.style.render(coords, values), panels, title, colorbar_label, self.style))

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            self.gifs.write(trainer.default_root_dir)


class EvolutionGifs:
    """Logged map figures, kept as the frames of one GIF per key: ``figures/<key>/evolution.gif``.

    Args:
        frame_ms: how long each frame shows.
    """

    def __init__(self, frame_ms: int) -> None:
        self.frame_ms = frame_ms
        self.frames: dict[str, list[np.ndarray]] = {}
        self.value_frames: dict[str, list[MapFrame]] = {}

    def log(self, trainer: pl.Trainer, key: str, figure: Figure) -> None:
        """Log ``figure`` under ``key`` (:func:`~tmaps.training.loggers.log_figure`) and keep its PNG as a frame
        (drawing a map is slow: it is rendered once)."""
        path = log_figure(trainer.loggers, key, figure, trainer.global_step, trainer.default_root_dir)
        with Image.open(path) as image:
            self.frames.setdefault(key, []).append(np.asarray(image.convert("RGB")))

    def log_values(self, trainer: pl.Trainer, key: str, frame: MapFrame) -> None:
        """Log a frame of maps on the largest colour limit (:attr:`RenderedMaps.limit`) of ``key`` so far, save its data
        beside its PNG (``step<step>.npz``, :meth:`MapFrame.save`: the report redraws it on a shared scale) and keep it
        to redraw the GIF on the run's largest (:meth:`write`)."""
        frames = self.value_frames.setdefault(key, [])
        frames.append(frame)
        scale = ColourScale(max(kept.maps.limit for kept in frames), f"the largest {COLOUR_PERCENTILE:g}th percentile of |values| of the epochs so far")
        path = log_figure(trainer.loggers, key, frame.plot(scale), trainer.global_step, trainer.default_root_dir)
        if path is not None:
            frame.save(path.with_suffix(".npz"))

    def write(self, run_dir: str | Path) -> list[Path]:
        """Every key's frames as ``<run_dir>/figures/<key>/evolution.gif``; the GIF paths."""
        paths = []
        frames_by_key = dict(self.frames)
        for key, frames in self.value_frames.items():
            scale = ColourScale(max(frame.maps.limit for frame in frames), f"the largest {COLOUR_PERCENTILE:g}th percentile of |values| of all epochs")
            frames_by_key[key] = [figure_image(frame.plot(scale)) for frame in frames]
        for key, frames in frames_by_key.items():
            path = figure_path(run_dir, key, 0).with_name("evolution.gif")
            paths.append(save_gif(frames, path, fps=1000 / self.frame_ms))
            log.info("%s over the epochs: %s", key, path)
        return paths


def probe_loader(trainer: pl.Trainer) -> DataLoader:
    """The validation loader of the run, or its training loader when it has none."""
    for loaders in (trainer.val_dataloaders, trainer.train_dataloader):
        if isinstance(loaders, Mapping):
            loaders = next(iter(loaders.values()), None)
        elif isinstance(loaders, Sequence):
            loaders = loaders[0] if loaders else None
        if isinstance(loaders, DataLoader):
            return loaders
    raise RuntimeError("the map callbacks take their probe utterances from the trainer's data loaders, and it has none yet")


def probe_batches(loader: DataLoader, n_utterances: int, batch_size: int) -> list[dict]:
    """``n_utterances`` of ``loader``'s dataset nearest to its median duration, collated in batches.

    Utterances are sorted by duration before batching, so that each batch holds similar
    lengths. Datasets without ``durations`` give their first ``n_utterances``.
    """
    dataset = loader.dataset
    n_utterances = min(n_utterances, len(dataset))
    durations = np.asarray(getattr(dataset, "durations", np.zeros(len(dataset))), dtype=np.float64)
    nearest = np.argsort(np.abs(durations - np.median(durations)), kind="stable")[:n_utterances]
    chosen = nearest[np.argsort(durations[nearest], kind="stable")].tolist()
    return [loader.collate_fn([dataset[i] for i in chosen[start : start + batch_size]]) for start in range(0, len(chosen), batch_size)]


def topographic_layers(pl_module: pl.LightningModule) -> list[str]:
    """The layers of the module's topographic loss, in the order of its config."""
    return list(trained_grids(pl_module))


def trained_grids(pl_module: pl.LightningModule) -> dict[str, Grid]:
    """The grid of every layer of the module's topographic loss (``pl_module.topo``); none without one."""
    regularizer = getattr(pl_module, "topo", None)
    return regularizer.grids if regularizer is not None else {}


def layer_grid(pl_module: pl.LightningModule, layer: str) -> Grid:
    """The grid ``layer`` is trained on; for a plain layer, its channels in order on ``Grid(n_units)``."""
    grid = trained_grids(pl_module).get(layer)
    return grid if grid is not None else Grid(filter_vectors(get_layer(pl_module.model, layer)).shape[0])

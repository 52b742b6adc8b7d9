"""One self-contained HTML page of one run, of several runs side by side, or of a study.

``tmaps-report RUN [RUN ...]`` (also written for one run at the end of ``tmaps-train``) and
``tmaps-report <study folder>`` (a folder whose sub-folders are run folders, with the study's
``claims.json`` where it has one). :func:`write_report` writes one file: every image embedded as
a compressed ``data:`` URI (WebP, or the original where that is smaller), its own small
script and style (``report.js``, ``report.css`` beside this module), no server and no network,
so that it opens from a cluster's run folder as it is. It shows

- for several runs, a runs table: the config keys that differ between the runs (and only
  those), the test CER and WER (with a 95% bootstrap CI over utterances where the run folder
  has ``test_utterances.csv``), and the last logged topography and diversity metrics of each
  topographic layer (``val/topo/<layer>/ratio``, ``centred_cosine``, ``participation_ratio``);
  runs that differ only by ``seed`` form a seed group, shown as mean ± 95% bootstrap CI over seeds,
  and their curves as mean ± one standard deviation;
- the study's claims (``claims.json``) when given a study folder;
- the phoneme maps of the topographic layers first, redrawn from the run's NAP profiles
  (``profiles/nap_step*.npz``) on the layer's learned grid with IPA labels ordered by phonetic
  class; then every other map (``figures/<key>/step<step>.png``), redrawn from the data logged
  beside it (``step<step>.npz``, :class:`~tmaps.introspect.render.MapFrame`) where every run has
  it, else as logged; the maps of one key side by side over the runs, every redrawn map of a row
  on one colour scale, which the row states; one epoch slider moves every map of the page;
- interactive metric curves (``metrics.csv``): values on hover, drag to zoom, double-click to
  reset, a click on a run in the legend hides or shows it everywhere; the topography and
  diversity curves first;
- for one run, its test results, its other tables (``profiles/layout_quality.csv``, ...) and
  its config and command-line overrides.

Faults in a run folder are named: an image that cannot be read is shown as a placeholder with
a warning; a ``metrics.csv`` cut in its last line (a run killed while writing) loses that line
with a warning; any other unreadable line is a ``ValueError`` naming the file and line.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import json
import logging
import math
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf
from PIL import Image, ImageDraw, UnidentifiedImageError

from tmaps.checkpoint import load_checkpoint
from tmaps.commands.wrapper import task_wrapper
from tmaps.introspect import Profiles
from tmaps.introspect.layout import grid_layout
from tmaps.introspect.render import COLOUR_PERCENTILE, ColourScale, MapFrame, MapStyle
from tmaps.studies import claims, stats

log = logging.getLogger(__name__)

REPORT_NAME = "report.html"
METRICS_FILE = "metrics.csv"
TEST_RESULTS_FILE = "test_results.csv"
TEST_UTTERANCES_FILE = "test_utterances.csv"
CLAIMS_FILE = "claims.json"
MAX_TABLE_ROWS = 200
MAX_FRAMES = 12
WEBP_QUALITY = 70
REDRAWN_DPI = 80  # the phoneme maps redrawn for the page: about half the bytes of 100 dpi, labels still legible
# Folders of a run that hold no report material (the W&B run's own copies, checkpoints).
SKIPPED_FOLDERS = ("wandb", "checkpoints", "tensorboard", "csv")
TOPOGRAPHY_METRICS = ("ratio", "centred_cosine", "participation_ratio")
CLAIM_FIELDS = ("id", "paper", "criterion", "status", "estimate", "ci95", "n_seeds", "p", "records")
PHONEME_MAP_PREFIX = "profiles/map/"
FILTER_MAP_PREFIX = "maps/filters/"
_STEP = re.compile(r"step(\d+)\.png$")
_PROFILES = re.compile(r"(nap|gradnap)_step(\d+)\.npz$")


def bare_runs_argv(argv: Sequence[str]) -> list[str]:
    """Command-line arguments for Hydra: every leading argument without ``=`` or ``-`` is a run folder of ``runs=[...]``.

    Examples:
        >>> bare_runs_argv(["a", "b's", "output=x.html"])
        ["runs=['a','b\\\\'s']", 'output=x.html']
    """
    count = next((index for index, argument in enumerate(argv) if "=" in argument or argument.startswith("-")), len(argv))
    if count == 0:
        return list(argv)
    quoted = ",".join("'" + folder.replace("\\", "\\\\").replace("'", "\\'") + "'" for folder in argv[:count])
    return [f"runs=[{quoted}]", *argv[count:]]


# ---------------------------------------------------------------- reading run folders


def _skipped(path: Path, run_dir: Path) -> bool:
    parts = path.relative_to(run_dir).parts
    return parts[0] in SKIPPED_FOLDERS or parts[0].startswith(".")


def is_run_folder(path: Path) -> bool:
    return any((path / name).exists() for name in (METRICS_FILE, TEST_RESULTS_FILE, "figures", ".hydra/config.yaml"))


def map_frames(run_dir: Path) -> dict[str, list[tuple[int, Path]]]:
    """Per map key (``figures/`` folder, ``__`` read as ``/``), its ``(step, png)`` frames in step order."""
    maps = {}
    for folder in sorted(path for path in (run_dir / "figures").glob("*") if path.is_dir()):
        frames = sorted((int(match.group(1)), path) for path in folder.glob("step*.png") if (match := _STEP.search(path.name)))
        if frames:
            maps[folder.name.replace("__", "/")] = frames
    return maps


def loose_figures(run_dir: Path) -> list[Path]:
    """PNGs of the run folder outside ``figures/`` (and outside the W&B run, checkpoints, hidden folders)."""
    return sorted(
        path for path in run_dir.rglob("*.png") if not _skipped(path, run_dir) and path.relative_to(run_dir).parts[0] != "figures"
    )


def tables(run_dir: Path) -> list[Path]:
    """CSV tables of the run folder, but the metric history and test results (shown on their own)."""
    own = {run_dir / name for name in (METRICS_FILE, TEST_RESULTS_FILE, TEST_UTTERANCES_FILE)}
    return sorted(path for path in run_dir.rglob("*.csv") if path not in own and not _skipped(path, run_dir))


def test_results_html(run: Run) -> str:
    """A run's test CER and WER per split, with the 95% CI over test utterances where the run kept them (``test_utterances.csv``)."""
    rows = "".join(f"<tr><th>{html.escape(name)}</th><td>{estimate.html()}</td></tr>" for name, estimate in run.error_rates().items())
    return f"<table><tr><th>split and rate</th><th>estimate [95% CI over test utterances]</th></tr>{rows}</table>" + table_html(run.test)


def read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ValueError(f"table {path} cannot be read: {error}") from error


def read_metrics(path: Path) -> pd.DataFrame:
    """``metrics.csv`` as rows of ``step`` (int), ``metric`` (str), ``value`` (float) and ``epoch`` where present.

    A last line cut short (a run killed while writing the file) is left out with a warning.

    Raises:
        ValueError: the columns are missing, or a line other than the last cannot be read (file and line named).
    """
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        table = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise ValueError(f"metrics file {path} cannot be read: {error}") from error
    if not {"step", "metric", "value"} <= set(table.columns):
        raise ValueError(f"metrics file {path} needs the columns step, metric, value; it has {list(table.columns)}")
    numbers = {column: pd.to_numeric(table[column], errors="coerce") for column in ("step", "epoch", "value") if column in table}
    bad = numbers["step"].isna() | numbers["value"].isna() | (table["metric"] == "")
    if "epoch" in numbers:
        bad |= numbers["epoch"].isna()
    if bad.any():
        first = int(np.flatnonzero(bad.to_numpy())[0])
        line = first + 2  # the header is line 1
        if first == len(table) - 1 and not text.endswith("\n"):
            log.warning("metrics file %s: its last line (%d) is cut short and is left out", path, line)
        else:
            raise ValueError(f"metrics file {path} line {line} cannot be read as step, metric, value: {','.join(table.iloc[first].astype(str))!r}")
    rows = pd.DataFrame({"step": numbers["step"], "metric": table["metric"], "value": numbers["value"]})
    if "epoch" in numbers:
        rows["epoch"] = numbers["epoch"]
    rows = rows[~bad]
    rows["step"] = rows["step"].astype(int)
    return rows


def flat_config(config: object, prefix: str = "") -> dict[str, str]:
    """Every leaf of a nested config as ``{"a.b.c": "<value>"}``: strings as they are, other values as JSON."""
    if isinstance(config, Mapping):
        flat = {}
        for key, value in config.items():
            flat |= flat_config(value, f"{prefix}{key}.")
        return flat if flat or not prefix else {prefix[:-1]: "{}"}
    return {prefix[:-1]: config if isinstance(config, str) else json.dumps(config, default=str)}


@dataclass
class Estimate:
    """A number with an optional 95% interval."""

    value: float
    low: float | None = None
    high: float | None = None

    def html(self) -> str:
        if not math.isfinite(self.value):
            return ""
        if self.low is None or not math.isfinite(self.low):
            return f"{self.value:.4g}"
        return f"{self.value:.4g} <span class='ci'>[{self.low:.3g}, {self.high:.3g}]</span>"


def seed_mean(values: Sequence[float]) -> Estimate:
    """Mean over seeds with its 95% bootstrap interval over seeds (:func:`tmaps.studies.stats.seed_ci`; none from a single seed)."""
    values = [value for value in values if math.isfinite(value)]
    if not values:
        return Estimate(math.nan)
    if len(values) < 2:
        return Estimate(float(values[0]))
    interval = stats.seed_ci(values)
    return Estimate(interval.estimate, interval.low, interval.high)


@dataclass
class Run:
    """What the page shows of one run folder."""

    path: Path
    name: str
    config: dict[str, str] = field(default_factory=dict)
    metrics: pd.DataFrame | None = None
    test: pd.DataFrame | None = None
    utterances: pd.DataFrame | None = None
    maps: dict[str, list[tuple[int, Path]]] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path, name: str) -> Run:
        run = cls(path, name, maps=map_frames(path))
        config_file = path / ".hydra" / "config.yaml"
        if config_file.is_file():
            try:
                run.config = flat_config(yaml.safe_load(config_file.read_text(encoding="utf-8")) or {})
            except yaml.YAMLError as error:
                raise ValueError(f"config {config_file} is not valid YAML: {error}") from error
        if (path / METRICS_FILE).is_file():
            run.metrics = read_metrics(path / METRICS_FILE)
        if (path / TEST_RESULTS_FILE).is_file():
            run.test = read_csv(path / TEST_RESULTS_FILE)
        if (path / TEST_UTTERANCES_FILE).is_file():
            run.utterances = read_csv(path / TEST_UTTERANCES_FILE)
        return run

    def epoch_of_step(self) -> dict[int, int]:
        if self.metrics is None or "epoch" not in self.metrics:
            return {}
        return dict(zip(self.metrics["step"], self.metrics["epoch"].astype(int)))

    def error_rates(self) -> dict[str, Estimate]:
        """``{"<split> CER": ..., "<split> WER": ...}``, with bootstrap CIs where per-utterance results exist."""
        if self.test is None or "split" not in self.test:
            return {}
        rates = {}
        for _, row in self.test.iterrows():
            for rate, edits, lengths in (("cer", "char_edits", "chars"), ("wer", "word_edits", "words")):
                if rate not in row:
                    continue
                estimate = Estimate(float(row[rate]))
                if self.utterances is not None and {"split", edits, lengths} <= set(self.utterances.columns):
                    split = self.utterances[self.utterances["split"] == row["split"]]
                    if len(split) > 1:
                        interval = stats.utterance_ci(split.to_dict("records"), unit="char" if rate == "cer" else "word")
                        estimate.low, estimate.high = interval.low, interval.high
                rates[f"{row['split']} {rate.upper()}"] = estimate
        return rates

    def last_topography(self) -> dict[str, float]:
        """The last logged value of each ``val/topo/<layer>/<ratio|centred_cosine|participation_ratio>``."""
        if self.metrics is None:
            return {}
        pattern = re.compile(rf"val/topo/(.+)/({'|'.join(TOPOGRAPHY_METRICS)})$")
        topo = self.metrics[self.metrics["metric"].str.match(pattern)]
        last = topo.sort_values("step").groupby("metric")["value"].last()
        return {f"{pattern.match(name).group(1)} {pattern.match(name).group(2)}": float(value) for name, value in last.items()}

    @functools.cached_property
    def grids(self) -> dict:
        """The grids of the run's topographic layers, from its checkpoint; none (with a warning) where it has no readable one."""
        checkpoints = sorted((self.path / "checkpoints").glob("*.ckpt"))
        if not checkpoints:
            return {}
        try:
            return load_checkpoint(checkpoints[-1]).grids
        except (ValueError, OSError) as error:
            log.warning("phoneme maps of %s are shown as logged: its checkpoint gives no grids (%s)", self.path, error)
            return {}


def resolve_runs(folders: Sequence[str | Path]) -> tuple[list[Path], Path | None]:
    """The run folders to report and the study folder (when one folder holding runs or ``claims.json`` is given)."""
    paths = [Path(folder) for folder in folders]
    for path in paths:
        if not path.is_dir():
            raise FileNotFoundError(f"run folder {path} does not exist")
    if len(paths) == 1 and not is_run_folder(paths[0]):
        study = paths[0]
        runs = sorted(child for child in study.iterdir() if child.is_dir() and is_run_folder(child))
        if runs or (study / CLAIMS_FILE).is_file():
            return runs, study
    return paths, None


def run_names(paths: Sequence[Path]) -> list[str]:
    """Shortest distinct names: the folder names, or the paths below the runs' common folder where names repeat."""
    names = [path.resolve().name for path in paths]
    if len(set(names)) == len(names):
        return names
    common = Path(os.path.commonpath([path.resolve() for path in paths]))
    return [str(path.resolve().relative_to(common)) or path.resolve().name for path in paths]


def differing_keys(runs: Sequence[Run]) -> list[str]:
    """Config keys whose value is not the same in every run (a key absent from a run counts as a value)."""
    keys = sorted(set().union(*(run.config for run in runs)))
    return [key for key in keys if len({run.config.get(key) for run in runs}) > 1]


def seed_groups(runs: Sequence[Run]) -> list[list[int]]:
    """Indices of runs whose configs are equal but for ``seed``, in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for index, run in enumerate(runs):
        key = json.dumps({name: value for name, value in run.config.items() if name != "seed"}, sort_keys=True) if run.config else f"#{index}"
        groups.setdefault(key, []).append(index)
    return list(groups.values())


def series_label(members: Sequence[Run], keys: Sequence[str]) -> str:
    """A run's name, or a seed group's settings that set it apart (``topo.weight=0.0 (3 seeds)``)."""
    settings = ", ".join(f"{key}={members[0].config.get(key, '–')}" for key in keys if key != "seed")
    return members[0].name if len(members) == 1 else f"{settings or members[0].name} ({len(members)} seeds)"


# ---------------------------------------------------------------- images


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def placeholder_image(text: str) -> bytes:
    image = Image.new("RGB", (420, 60), "#eeeeee")
    ImageDraw.Draw(image).text((10, 22), text[:64], fill="#aa0000")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def encode_image(image: Image.Image, original: bytes | None = None) -> str:
    """A data URI of ``image`` as lossy WebP, or of the ``original`` PNG bytes where those are smaller."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="WEBP", quality=WEBP_QUALITY, method=4)
    if original is not None and len(original) <= buffer.tell():
        return data_uri(original, "image/png")
    return data_uri(buffer.getvalue(), "image/webp")


def image_uri(path: Path) -> str:
    """``path`` compressed (:func:`encode_image`), or a placeholder that names it, with a warning, if it is not a readable image."""
    original = path.read_bytes()
    try:
        with Image.open(io.BytesIO(original)) as image:
            image.load()
            return encode_image(image, original)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        log.warning("image %s cannot be read (%s); the page shows a placeholder", path, error)
        return data_uri(placeholder_image(f"unreadable image: {path.name}"), "image/png")


def figure_uri(figure: Figure) -> str:
    figure.set_dpi(REDRAWN_DPI)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return encode_image(Image.fromarray(np.asarray(canvas.buffer_rgba())))


class Images:
    """The page's images, each stored once and referred to by index."""

    def __init__(self) -> None:
        self.uris: list[str] = []
        self._index: dict[str, int] = {}

    def add(self, uri: str) -> int:
        if uri not in self._index:
            self._index[uri] = len(self.uris)
            self.uris.append(uri)
        return self._index[uri]


# ---------------------------------------------------------------- maps


@dataclass
class MapRow:
    """One map key shown side by side over the runs: per run, its ``(epoch, image index)`` frames."""

    key: str
    note: str
    panels: list[tuple[str, list[tuple[int, int]]]]


def slider_epochs(frame_epochs: Sequence[Sequence[int]], limit: int) -> list[int]:
    """The epochs the slider offers: every epoch that has a frame, thinned evenly to ``limit`` (first and last kept)."""
    epochs = sorted(set().union(*map(set, frame_epochs))) if frame_epochs else []
    if len(epochs) <= limit:
        return epochs
    return [epochs[index] for index in sorted(set(np.linspace(0, len(epochs) - 1, limit).round().astype(int)))]


def shown_frame(epochs: Sequence[int], epoch: int) -> int:
    """Index of the frame a map shows at ``epoch``: its last one at or before it, else its first."""
    return max([index for index, frame in enumerate(epochs) if frame <= epoch], default=0)


def needed_frames(frame_epochs: Sequence[int], slider: Sequence[int]) -> list[int]:
    return sorted({shown_frame(frame_epochs, epoch) for epoch in slider})


def frame_epochs(run: Run, steps: Sequence[int]) -> list[int]:
    """Epochs of frames logged at ``steps``, from the metric history; the steps' order where the history lacks them."""
    epochs = run.epoch_of_step()
    if all(step in epochs for step in steps):
        return [epochs[step] for step in steps]
    return list(range(len(steps)))


FrameSource = tuple[list[int], list[Callable[[], MapFrame]]]


def phoneme_map_frames(run: Run, layer: str) -> FrameSource | None:
    """A topographic layer's NAP maps redrawn from the run's profiles, or None where they cannot be.

    Returns the steps and, per step, the maps to draw (panels as the profiles' grouping says: phonemes in IPA by
    class); None when the run has no profiles, no checkpoint with the layer's grid, or draws its maps on another
    layout than the grid.
    """
    if run.config.get("callbacks.activation_profiles.layout", "grid") != "grid":
        return None
    files = sorted(
        (int(match.group(2)), path) for path in (run.path / "profiles").glob("*.npz") if (match := _PROFILES.search(path.name)) and match.group(1) == "nap"
    )
    if not files or layer not in run.grids:
        return None
    style, steps, frames = MapStyle(), [], []
    for step, path in files:
        profiles = Profiles.load(path)
        if layer not in profiles.layers:
            continue
        values = profiles[layer].mean
        maps = style.render(grid_layout(values.T, shape=run.grids[layer].shape), values)
        frames.append(functools.partial(MapFrame, maps, profiles.panels(run.config.get("data.language", "en")), "", profiles.quantity, style))
        steps.append(step)
    return (steps, frames) if steps else None


def logged_map_frames(run: Run, key: str) -> FrameSource | None:
    """The maps of ``key`` from the data the map callbacks keep beside each PNG (``step<step>.npz``), or None where a frame lacks it."""
    frames = run.maps[key]
    if not all(path.with_suffix(".npz").is_file() for _, path in frames):
        return None
    return [step for step, _ in frames], [functools.partial(MapFrame.load, path.with_suffix(".npz")) for _, path in frames]


def map_note(key: str, scale: ColourScale | None, n_runs: int) -> str:
    """What a row of maps shows, and on which colour scale."""
    if scale is not None:
        shared = (
            f"one colour scale for every map of this row on this page: ±{scale.limit:.3g}, "
            f"the {COLOUR_PERCENTILE:g}th percentile of |values| (values beyond it saturate)"
        )
        if key.startswith(PHONEME_MAP_PREFIX):
            return (
                f"NAPs by phoneme on the layer's learned grid, IPA labels ordered by class (vowels, diphthongs, plosives, affricates, "
                f"fricatives, nasals, approximants, other); {shared}."
            )
        runs = ", over every run (each on its own layout where the runs' layouts differ)" if n_runs > 1 else ""
        return f"Redrawn from the data logged with each map; {shared}{runs}."
    if n_runs < 2:
        return ""
    if key.startswith(FILTER_MAP_PREFIX):
        return (
            "As logged during training. The first layer's colours are mel bands, one scale in every run; the other layers' colours are "
            "each run's own first three filter principal components, which do not compare across runs."
        )
    return "As logged during training: each run's own colour scale (the runs logged no map data to redraw them on one)."


def map_rows(runs: Sequence[Run], images: Images, max_frames: int) -> tuple[list[MapRow], list[int]]:
    """Every map key of the runs, phoneme maps of topographic layers first, each frame the slider needs once; and the slider's epochs.

    Maps are redrawn where the runs allow it (phoneme maps from the profiles, other maps from the data logged beside them),
    every map of a row on one colour scale; else shown as logged.
    """
    keys = sorted({key for run in runs for key in run.maps}, key=lambda key: (not key.startswith(PHONEME_MAP_PREFIX), key))
    redrawn = {
        (index, key): (key.startswith(PHONEME_MAP_PREFIX) and phoneme_map_frames(run, key[len(PHONEME_MAP_PREFIX) :])) or logged_map_frames(run, key)
        for index, run in enumerate(runs)
        for key in run.maps
    }
    epochs_of = {}
    for index, run in enumerate(runs):
        for key, frames in run.maps.items():
            steps = redrawn[(index, key)][0] if redrawn[(index, key)] else [step for step, _ in frames]
            epochs_of[(index, key)] = frame_epochs(run, steps)
    slider = slider_epochs(list(epochs_of.values()), max_frames)
    rows = []
    for key in keys:
        shown = [(index, run) for index, run in enumerate(runs) if key in run.maps]
        needed = {index: needed_frames(epochs_of[(index, key)], slider) for index, _ in shown}
        loaded, scale = {}, None
        if all(redrawn[(index, key)] for index, _ in shown):
            loaded = {(index, frame): redrawn[(index, key)][1][frame]() for index, _ in shown for frame in needed[index]}
            scale = ColourScale.robust(np.concatenate([frame.maps.values.ravel() for frame in loaded.values()]), scope=", one scale for the row")
        panels = []
        for index, run in shown:
            epochs = epochs_of[(index, key)]
            frames = []
            for frame in needed[index]:
                if scale is not None:
                    uri = figure_uri(loaded[(index, frame)].plot(scale, title=f"{run.name}: {key}, epoch {epochs[frame]}"))
                else:
                    uri = image_uri(run.maps[key][frame][1])
                frames.append((epochs[frame], images.add(uri)))
            panels.append((run.name, frames))
        rows.append(MapRow(key, map_note(key, scale, len(panels)), panels))
    return rows, slider


def map_row_html(row: MapRow, single: bool) -> str:
    panels = "".join(
        f"<figure class='map-panel'>{'' if single else f'<figcaption>{html.escape(name)}</figcaption>'}"
        f"<img class='map-frame' alt='{html.escape(row.key)} of {html.escape(name)}' data-frames='{json.dumps(frames)}'>"
        f"<div class='frame-caption'></div></figure>"
        for name, frames in row.panels
    )
    note = f"<p class='note'>{html.escape(row.note)}</p>" if row.note else ""
    return f"<section class='map-row' id='{html.escape(row.key)}'><h3>{html.escape(row.key)}</h3>{note}<div class='map-panels'>{panels}</div></section>"


# ---------------------------------------------------------------- curves


def series_of(runs: Sequence[Run], group: Sequence[int], metric: str) -> dict | None:
    """One curve of ``metric``: a run's values, or a seed group's mean ± one standard deviation on its first run's steps."""
    curves = []
    for index in group:
        metrics = runs[index].metrics
        if metrics is None:
            continue
        rows = metrics[metrics["metric"] == metric].sort_values("step").drop_duplicates("step", keep="last")
        if len(rows):
            curves.append((rows["step"].to_numpy(float), rows["value"].to_numpy(float)))
    if not curves:
        return None
    steps = curves[0][0]
    if len(curves) == 1:
        return {"x": steps.tolist(), "y": curves[0][1].tolist()}
    reach = min(curve[0][-1] for curve in curves)
    steps = steps[steps <= reach]
    stacked = np.stack([np.interp(steps, x, y) for x, y in curves])
    mean, spread = stacked.mean(axis=0), stacked.std(axis=0, ddof=1)
    return {"x": steps.tolist(), "y": mean.tolist(), "lo": (mean - spread).tolist(), "hi": (mean + spread).tolist()}


def curve_data(runs: Sequence[Run], groups: Sequence[Sequence[int]], labels: Sequence[str]) -> tuple[list[dict], list[dict]]:
    """The topography/diversity charts and the other charts, each ``{"metric", "series": [{"id", ...}]}``."""
    names = sorted({name for run in runs if run.metrics is not None for name in run.metrics["metric"].unique()})
    topo = re.compile(rf"val/topo/.+/({'|'.join(TOPOGRAPHY_METRICS)})$")
    charts: tuple[list[dict], list[dict]] = ([], [])
    for name in names:
        series = [{"id": index, "label": labels[index]} | curve for index, group in enumerate(groups) if (curve := series_of(runs, group, name))]
        if series:
            charts[0 if topo.match(name) else 1].append({"metric": name, "series": series})
    return charts


def charts_html(charts: Sequence[dict], kind: str) -> str:
    return "".join(
        f"<div class='chart' data-kind='{kind}' data-chart='{index}'><h4>{html.escape(chart['metric'])}</h4></div>" for index, chart in enumerate(charts)
    )


# ---------------------------------------------------------------- tables


def table_html(table: pd.DataFrame) -> str:
    shown = table.tail(MAX_TABLE_ROWS)
    note = f"<p class='note'>last {MAX_TABLE_ROWS} of {len(table)} rows</p>" if len(table) > MAX_TABLE_ROWS else ""
    return shown.to_html(index=False, float_format=lambda value: f"{value:.4g}", border=0, classes="table") + note


def runs_table_html(runs: Sequence[Run], groups: Sequence[Sequence[int]], keys: Sequence[str]) -> str:
    """Runs (or seed groups) as rows: the config keys that differ, the test error rates and the last topography metrics."""
    rates = [run.error_rates() for run in runs]
    topography = [run.last_topography() for run in runs]
    rate_columns = list(dict.fromkeys(name for run_rates in rates for name in run_rates))
    topo_columns = list(dict.fromkeys(name for run_topo in topography for name in run_topo))
    head = "".join(f"<th class='config-key'>{html.escape(key)}</th>" for key in keys if key != "seed")
    head += "<th class='config-key'>seed</th>" if "seed" in keys else ""
    head += "".join(f"<th>{html.escape(name)}</th>" for name in [*rate_columns, *topo_columns])
    body = ""
    for group in groups:
        members = [runs[index] for index in group]
        shown_keys = [key for key in keys if key != "seed"] + (["seed"] if "seed" in keys else [])
        cells = "".join(
            f"<td>{html.escape(', '.join(dict.fromkeys(run.config.get(key, '–') for run in members)))}</td>" for key in shown_keys
        )
        if len(group) == 1:
            numbers = [rates[group[0]].get(name, Estimate(math.nan)) for name in rate_columns]
            numbers += [Estimate(topography[group[0]].get(name, math.nan)) for name in topo_columns]
        else:
            numbers = [seed_mean([rates[index][name].value for index in group if name in rates[index]]) for name in rate_columns]
            numbers += [seed_mean([topography[index].get(name, math.nan) for index in group]) for name in topo_columns]
        cells += "".join(f"<td>{number.html()}</td>" for number in numbers)
        label = html.escape(members[0].name if len(group) == 1 else f"{' + '.join(run.name for run in members)} ({len(group)} seeds)")
        body += f"<tr class='{'group' if len(group) > 1 else 'run'}'><th class='run-name'>{label}</th>{cells}</tr>"
    return f"<table class='table runs'><thead><tr><th>run</th>{head}</tr></thead><tbody>{body}</tbody></table>"


def claims_html(claims: Sequence[dict]) -> str:
    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        if isinstance(value, list) and all(isinstance(item, (int, float)) for item in value):
            return "[" + ", ".join(f"{item:.4g}" for item in value) + "]"
        if isinstance(value, list):
            return ", ".join(str(item) for item in value)
        return "" if value is None else str(value)

    head = "".join(f"<th>{name}</th>" for name in CLAIM_FIELDS)
    body = "".join(
        f"<tr class='status-{html.escape(str(claim.get('status', '')))}'>"
        + "".join(f"<td>{html.escape(cell(claim.get(name)))}</td>" for name in CLAIM_FIELDS)
        + "</tr>"
        for claim in claims
    )
    return f"<table class='table claims'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# ---------------------------------------------------------------- the page


def _asset(name: str) -> str:
    return resources.files("tmaps.commands").joinpath(name).read_text(encoding="utf-8")


def page_html(title: str, location: str, sections: Sequence[tuple[str, str, str]], payload: dict) -> str:
    data = json.dumps(payload, separators=(",", ":")).replace("</", "<\\/")
    nav = "".join(f"<a href='#{anchor}'>{heading}</a>" for anchor, heading, _ in sections)
    body = "".join(f"<section id='{anchor}'><h2>{heading}</h2>{content}</section>" for anchor, heading, content in sections)
    return (
        f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<link rel='icon' href='data:,'><style>{_asset('report.css')}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p class='note'>{location}; written by tmaps-report, works offline.</p><nav>{nav}</nav>{body}"
        f"<script type='application/json' id='report-data'>{data}</script><script>{_asset('report.js')}</script></body></html>\n"
    )


def write_report(
    runs: str | Path | Sequence[str | Path], output: str | Path | None = None, max_frames: int = MAX_FRAMES
) -> Path:
    """Write the report page of one run, several runs or a study (see the module notes); return its path.

    Args:
        runs: a run folder of ``tmaps-train``, several, or a study folder (sub-folders that are run folders, and ``claims.json``).
        output: the HTML file; default ``report.html`` in the run folder, the study folder, or the runs' common folder.
        max_frames: the most epochs the slider offers (frames no slider position shows are left out).

    Raises:
        FileNotFoundError: a run folder does not exist.
        ValueError: there is nothing to report, or a file cannot be read (the file is named).
    """
    folders = [runs] if isinstance(runs, (str, Path)) else list(runs)
    if not folders:
        raise ValueError("no run folder given")
    paths, study = resolve_runs(folders)
    if output is None:
        output = (paths[0] if len(paths) == 1 and study is None else study or Path(os.path.commonpath([path.resolve() for path in paths]))) / REPORT_NAME
    output = Path(output)
    page_folder = output.resolve().parent
    runs = [Run.read(path, name) for path, name in zip(paths, run_names(paths))]
    single = len(runs) == 1 and study is None
    groups = seed_groups(runs) if not single else [[0]]
    keys = differing_keys(runs)
    labels = [series_label([runs[index] for index in group], keys) for group in groups]
    images = Images()
    rows, slider = map_rows(runs, images, max_frames)
    topo_charts, other_charts = curve_data(runs, groups, labels)

    sections: list[tuple[str, str, str]] = []
    if not single:
        note = f"<p class='note'>{len(runs)} runs; config keys that differ: {len(keys)}. Numbers of a seed group: mean [95% bootstrap CI over seeds].</p>"
        sections.append(("runs", "Runs", note + runs_table_html(runs, groups, keys)))
        if study is not None and (study / CLAIMS_FILE).is_file():
            sections.append(("claims", "Claims", claims_html(claims.read_claims(study / CLAIMS_FILE))))
    phoneme_rows = [row for row in rows if row.key.startswith(PHONEME_MAP_PREFIX)]
    other_rows = [row for row in rows if not row.key.startswith(PHONEME_MAP_PREFIX)]
    slider_html = (
        "<div class='epoch-bar'><button type='button' class='play'>play</button>"
        f"<input type='range' id='epoch-slider' min='0' max='{max(len(slider) - 1, 0)}' value='{max(len(slider) - 1, 0)}' aria-label='epoch of every map'>"
        "<span id='epoch-label'></span><span class='note'>moves every map of the page</span></div>"
    )
    if phoneme_rows:
        sections.append(("phoneme-maps", "Phoneme maps of the topographic layers", slider_html + "".join(map_row_html(row, single) for row in phoneme_rows)))
    legend = "<div class='legend'></div><p class='note'>hover for values; drag to zoom, double-click to reset; click a run to hide or show it</p>"
    if topo_charts:
        sections.append(("topography", "Topography and diversity", legend + f"<div class='charts'>{charts_html(topo_charts, 'topo')}</div>"))
    if single and runs[0].test is not None:
        sections.append(("test", "Test results", test_results_html(runs[0])))
    if other_charts:
        sections.append(("metrics", "Metric curves", ("" if topo_charts else legend) + f"<div class='charts'>{charts_html(other_charts, 'other')}</div>"))
    loose = [(run, path) for run in runs for path in loose_figures(run.path)]
    if other_rows or loose:
        body = ("" if phoneme_rows else slider_html) + "".join(map_row_html(row, single) for row in other_rows)
        body += "".join(
            f"<section class='map-row'><h3>{html.escape(run.name if not single else '')} {html.escape(str(path.relative_to(run.path)))}</h3>"
            f"<img class='figure' alt='{html.escape(path.name)}' data-image='{images.add(image_uri(path))}'></section>"
            for run, path in loose
        )
        sections.append(("maps", "Maps and figures", body))
    if single:
        found = tables(runs[0].path)
        if found:
            body = "".join(f"<h3>{html.escape(str(path.relative_to(runs[0].path)))}</h3>{table_html(read_csv(path))}" for path in found)
            sections.append(("tables", "Tables", body))
        configs = [path for path in (runs[0].path / ".hydra" / "overrides.yaml", runs[0].path / ".hydra" / "config.yaml") if path.is_file()]
        if configs:
            sections.append(("config", "Config", "".join(f"<h3>{path.name}</h3><pre>{html.escape(path.read_text())}</pre>" for path in configs)))
    if not sections:
        raise ValueError(
            f"run folder {paths[0]} holds nothing to report: no {TEST_RESULTS_FILE}, {METRICS_FILE}, figures/, PNG, CSV or .hydra/config.yaml"
        )
    where = [os.path.relpath(path.resolve(), page_folder) for path in ([study] if study is not None else paths)]
    location = ("study folder " if study is not None else "run folder " if single else "run folders ") + ", ".join(html.escape(place) for place in where)
    title = f"tmaps {'study' if study is not None else 'run' if single else 'runs'} {(study or paths[0]).resolve().name}"
    title += "" if single or study else f" and {len(runs) - 1} more"
    payload = {"images": images.uris, "epochs": slider, "charts": {"topo": topo_charts, "other": other_charts}, "series": labels}
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(page_html(title, f"{location} (relative to this page)", sections, payload), encoding="utf-8")
    return output


@hydra.main(version_base="1.3", config_path="pkg://tmaps.conf", config_name="report")
@task_wrapper("tmaps-report")
def main(cfg: DictConfig) -> None:
    """``tmaps-report runs=[<run dir>, ...]`` (or a study folder): the page of those runs."""
    runs = OmegaConf.to_container(cfg.runs) if OmegaConf.is_list(cfg.runs) else [cfg.runs]
    print(f"report: {write_report(runs, cfg.output, cfg.max_frames)}")


def run() -> None:
    """The console script: the leading arguments without ``=`` are run folders (Hydra would reject them)."""
    sys.argv[1:] = bare_runs_argv(sys.argv[1:])
    main()


if __name__ == "__main__":
    run()

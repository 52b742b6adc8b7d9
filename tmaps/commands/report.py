"""One self-contained HTML page per run (``tmaps-report <run dir>``, also written at the end of ``tmaps-train``).

:func:`write_report` reads a run folder and writes ``report.html`` into it: one file, every
image embedded as a ``data:`` URI, a few lines of inline script and style, no server and no
network, so that it opens from a cluster's run folder as it is. It shows

- the test results (``test_results.csv``, written by ``tmaps-train``);
- the metric curves (``metrics.csv``, written by :class:`~tmaps.callbacks.MetricHistory`);
- every map: each folder of ``figures/`` holds one map's frames (``step<step>.png``), shown
  with an epoch slider and a play button; other PNGs of the run folder (``tmaps-maps`` or
  ``tmaps-introspect`` output written into it) as they are;
- every other table of the run folder, such as ``profiles/layout_quality.csv`` and
  ``weight_change.csv``;
- the run's composed config (``.hydra/config.yaml``) and command-line overrides.

A run folder that lacks some of these gets a page without them; one that lacks all of
them is refused.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import hydra
import pandas as pd
from matplotlib.figure import Figure
from omegaconf import DictConfig

from tmaps.commands.wrapper import task_wrapper

REPORT_NAME = "report.html"
METRICS_FILE = "metrics.csv"
TEST_RESULTS_FILE = "test_results.csv"
MAX_TABLE_ROWS = 200
# Folders of a run that hold no report material (the W&B run's own copies, checkpoints).
SKIPPED_FOLDERS = ("wandb", "checkpoints", "tensorboard", "csv")
_STEP = re.compile(r"step(\d+)\.png$")


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def figure_uri(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    return data_uri(buffer.getvalue())


def _skipped(path: Path, run_dir: Path) -> bool:
    parts = path.relative_to(run_dir).parts
    return parts[0] in SKIPPED_FOLDERS or parts[0].startswith(".")


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
    own = {run_dir / METRICS_FILE, run_dir / TEST_RESULTS_FILE}
    return sorted(path for path in run_dir.rglob("*.csv") if path not in own and not _skipped(path, run_dir))


def metric_curves(metrics: pd.DataFrame) -> Figure:
    """One small panel per metric: its value against the training step."""
    names = sorted(metrics["metric"].unique())
    ncols = min(4, len(names))
    nrows = math.ceil(len(names) / ncols)
    figure = Figure(figsize=(3.4 * ncols, 2.4 * nrows), dpi=100, layout="constrained")
    for axes, name in zip(figure.subplots(nrows, ncols, squeeze=False).flat, names):
        rows = metrics[metrics["metric"] == name]
        axes.plot(rows["step"], rows["value"], marker="o" if len(rows) <= 30 else None, markersize=3)
        axes.set_title(name, fontsize=9)
        axes.set_xlabel("step", fontsize=8)
        axes.tick_params(labelsize=7)
    for axes in figure.axes[len(names) :]:
        axes.set_axis_off()
    return figure


def read_metrics(path: Path) -> tuple[pd.DataFrame, int]:
    """The rows of a metrics file with a step, a metric name and a number, and how many rows were cut short.

    :class:`~tmaps.callbacks.MetricHistory` writes finite numbers only; a run stopped while the
    file was written leaves its last line cut (``120,3,val/c``). Such rows are left out, so that
    the rest of the curves are still drawn.
    """
    metrics = read_csv(path)
    if not {"step", "metric", "value"} <= set(metrics.columns):
        raise ValueError(f"metrics file {path} needs the columns step, metric, value; it has {list(metrics.columns)}")
    metrics = metrics.assign(step=pd.to_numeric(metrics["step"], errors="coerce"), value=pd.to_numeric(metrics["value"], errors="coerce"))
    complete = metrics.dropna(subset=["step", "metric", "value"])
    return complete, len(metrics) - len(complete)


def read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ValueError(f"table {path} cannot be read: {error}") from error


def table_html(table: pd.DataFrame) -> str:
    shown = table.tail(MAX_TABLE_ROWS)
    note = f"<p class='note'>last {MAX_TABLE_ROWS} of {len(table)} rows</p>" if len(table) > MAX_TABLE_ROWS else ""
    return shown.to_html(index=False, float_format=lambda value: f"{value:.4g}", border=0, classes="table") + note


def slider_html(key: str, frames: Sequence[tuple[int, Path]]) -> str:
    """A map with an epoch slider: all frames as data URIs in a JSON block, the last shown first."""
    sources = [{"src": data_uri(path.read_bytes()), "label": f"step {step} (frame {index + 1} of {len(frames)})"} for index, (step, path) in enumerate(frames)]
    last = len(sources) - 1
    payload = json.dumps(sources).replace("</", "<\\/")
    return (
        f"<section class='map frames' id='{html.escape(key)}'><h3>{html.escape(key)}</h3>"
        f"<div class='controls'><button type='button' class='play'>play</button>"
        f"<input type='range' class='slider' min='0' max='{last}' value='{last}' aria-label='frame of {html.escape(key)}'>"
        f"<span class='caption'>{html.escape(sources[last]['label'])}</span></div>"
        f"<img class='frame' alt='{html.escape(key)}' src='{sources[last]['src']}'>"
        f"<script type='application/json' class='frame-data'>{payload}</script></section>"
    )


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<link rel="icon" href="data:,">
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1400px; color: #222; }}
h1 {{ font-size: 1.4em; }} h2 {{ border-bottom: 1px solid #ccc; margin-top: 2em; }} h3 {{ font-size: 1em; margin: 0.4em 0; }}
nav a {{ margin-right: 1em; }} .note {{ color: #666; font-size: 0.9em; }}
img {{ max-width: 100%; }} .map {{ margin: 1em 0 2em; }} .map img {{ border: 1px solid #eee; }}
.controls {{ display: flex; gap: 0.8em; align-items: center; margin: 0.3em 0; }} .slider {{ width: 320px; }}
table.table {{ border-collapse: collapse; font-size: 0.85em; }} .table td, .table th {{ padding: 2px 8px; border-bottom: 1px solid #eee; text-align: right; }}
pre {{ background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }}
</style></head><body>
<h1>{title}</h1>
<p class="note">run folder {run_dir}; written by tmaps-report, works offline.</p>
<nav>{nav}</nav>
{sections}
<script>
document.querySelectorAll(".frames").forEach(function (section) {{
  var frames = JSON.parse(section.querySelector(".frame-data").textContent);
  var image = section.querySelector(".frame"), slider = section.querySelector(".slider");
  var caption = section.querySelector(".caption"), play = section.querySelector(".play"), timer = null;
  function show(index) {{ slider.value = index; image.src = frames[index].src; caption.textContent = frames[index].label; }}
  slider.addEventListener("input", function () {{ show(Number(slider.value)); }});
  play.addEventListener("click", function () {{
    if (timer) {{ clearInterval(timer); timer = null; play.textContent = "play"; return; }}
    play.textContent = "stop";
    timer = setInterval(function () {{ show((Number(slider.value) + 1) % frames.length); }}, 600);
  }});
}});
</script>
</body></html>
"""


def write_report(run_dir: str | Path, output: str | Path | None = None) -> Path:
    """Write the report page of ``run_dir`` (see the module notes); return its path.

    Args:
        run_dir: a run folder of ``tmaps-train`` (or any folder holding its kind of files).
        output: the HTML file; default ``<run_dir>/report.html``.

    Raises:
        FileNotFoundError: ``run_dir`` is not a folder.
        ValueError: it holds nothing to report, or a table cannot be read (the file is named).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    sections: list[tuple[str, str, str]] = []  # (anchor, heading, body)
    if (run_dir / TEST_RESULTS_FILE).is_file():
        sections.append(("test", "Test results", table_html(read_csv(run_dir / TEST_RESULTS_FILE))))
    if (run_dir / METRICS_FILE).is_file():
        metrics, cut = read_metrics(run_dir / METRICS_FILE)
        note = f"<p class='note'>{cut} row(s) of {METRICS_FILE} cut short (the run stopped while writing it?) are left out</p>" if cut else ""
        if len(metrics):
            sections.append(("metrics", "Metric curves", f"<img alt='metric curves' src='{figure_uri(metric_curves(metrics))}'>{note}"))
    maps = map_frames(run_dir)
    loose = loose_figures(run_dir)
    if maps or loose:
        body = "".join(slider_html(key, frames) for key, frames in maps.items())
        body += "".join(
            f"<section class='map'><h3>{html.escape(str(path.relative_to(run_dir)))}</h3>"
            f"<img alt='{html.escape(path.name)}' src='{data_uri(path.read_bytes())}'></section>"
            for path in loose
        )
        sections.append(("maps", "Maps and figures", body))
    found_tables = tables(run_dir)
    if found_tables:
        body = "".join(f"<h3>{html.escape(str(path.relative_to(run_dir)))}</h3>{table_html(read_csv(path))}" for path in found_tables)
        sections.append(("tables", "Tables", body))
    configs = [path for path in (run_dir / ".hydra" / "overrides.yaml", run_dir / ".hydra" / "config.yaml") if path.is_file()]
    if configs:
        body = "".join(f"<h3>{path.name}</h3><pre>{html.escape(path.read_text())}</pre>" for path in configs)
        sections.append(("config", "Config", body))
    if not sections:
        raise ValueError(
            f"run folder {run_dir} holds nothing to report: no {TEST_RESULTS_FILE}, {METRICS_FILE}, figures/, PNG, CSV or .hydra/config.yaml"
        )
    page = PAGE.format(
        title=html.escape(f"tmaps run {run_dir.resolve().name}"),
        run_dir=html.escape(str(run_dir.resolve())),
        nav="".join(f"<a href='#{anchor}'>{heading}</a>" for anchor, heading, _ in sections),
        sections="".join(f"<h2 id='{anchor}'>{heading}</h2>{body}" for anchor, heading, body in sections),
    )
    output = Path(output) if output is not None else run_dir / REPORT_NAME
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(page, encoding="utf-8")
    return output


@hydra.main(version_base="1.3", config_path="pkg://tmaps.conf", config_name="report")
@task_wrapper("tmaps-report")
def main(cfg: DictConfig) -> None:
    """``tmaps-report run_dir=<run dir>``: the run's report page."""
    print(f"report: {write_report(cfg.run_dir, cfg.output)}")


def run() -> None:
    """The console script ``tmaps-report <run dir>``: a first argument without ``=`` is the run folder."""
    if len(sys.argv) > 1 and "=" not in sys.argv[1] and not sys.argv[1].startswith("-"):
        sys.argv[1] = f"run_dir={sys.argv[1]}"
    main()


if __name__ == "__main__":
    run()

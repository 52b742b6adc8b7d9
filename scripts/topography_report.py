"""How topographic are the layers of some checkpoints? Neighbour-similarity ratios and filter maps.

    python scripts/topography_report.py baseline=logs/quickstart/.../last.ckpt topo=logs/.../last.ckpt \
        --layers conv2 conv3 --output docs/figures

Every checkpoint's layers are put on the grids of the topographic checkpoint's ``topo`` config
(:func:`tmaps.topo.topographic_grids`: the same shape, boundary and neighbourhood for all, so a
baseline is measured on the grid it would have had). Prints a Markdown table of ``tmaps.topo.topography_metrics`` (ratio,
smoothness, neighbour and shuffled cosine) per checkpoint and layer, and writes one filter-map
PNG per checkpoint: the layers side by side.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from PIL import Image

from tmaps.checkpoint import LoadedCheckpoint, load_checkpoint
from tmaps.introspect.render import figure_image
from tmaps.topo import filter_map, topographic_grids, topography_metrics


def reference_topo(checkpoints: dict[str, LoadedCheckpoint], layers: list[str]) -> dict:
    """The ``topo`` config of the first checkpoint trained with a topographic loss, on ``layers``.

    Without one, ``layers`` on the default flat grids.
    """
    configs = [loaded.hyper_parameters["topo"] for loaded in checkpoints.values() if loaded.grids]
    return {**(configs[0] if configs else {}), "layers": layers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoints", nargs="+", help="name=path.ckpt")
    parser.add_argument("--layers", nargs="+", default=["conv2", "conv3"])
    parser.add_argument("--output", type=Path, default=Path("figures"))
    arguments = parser.parse_args()
    named = dict(item.split("=", 1) for item in arguments.checkpoints)
    checkpoints = {name: load_checkpoint(path) for name, path in named.items()}
    topo = reference_topo(checkpoints, arguments.layers)
    rows = []
    arguments.output.mkdir(parents=True, exist_ok=True)
    for name, loaded in checkpoints.items():
        grids = topographic_grids(loaded.model, topo)
        metrics = topography_metrics(loaded.model, arguments.layers, grids)
        for layer in arguments.layers:
            rows.append({"model": name, "layer": layer, **{key.split("/", 1)[1]: value for key, value in metrics.items() if key.startswith(f"{layer}/")}})
        panels = [figure_image(filter_map(loaded.model, layer, grids[layer])) for layer in arguments.layers]
        height = max(panel.shape[0] for panel in panels)
        sheet = Image.new("RGB", (sum(panel.shape[1] for panel in panels), height), "white")
        left = 0
        for panel in panels:
            sheet.paste(Image.fromarray(panel), (left, 0))
            left += panel.shape[1]
        path = arguments.output / f"filter_maps_{name}.png"
        sheet.save(path)
        print(f"{name}: {path}")
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".3f"))


if __name__ == "__main__":
    main()

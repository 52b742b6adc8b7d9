"""Error-mode demo: where in a layer do a model's wrong characters differ from its correct ones?

With a trained checkpoint and a split of a corpus folder of manifests, every transcript is
forced-aligned to the model's output and each character is marked correct or wrong by what
greedy decoding emits on its frames (:mod:`tmaps.introspect.error_analysis`). NAPs of the
``"outcome"`` grouping (character x correct/wrong) give, for the characters the model gets
wrong most often, maps of the correct frames, the wrong frames and their difference
(``docs/figures/error_maps.png``), and a table per character of the error rate and the
cosine distance between the correct and wrong profiles. The most frequent confusion pairs
are printed too.

    python scripts/error_maps.py --checkpoint <run folder>/checkpoints/last.ckpt \\
        --corpus data/synth/en-... --split dev

The last line printed is the key figure: the overall character error rate and the mean
correct/wrong profile distance of the mapped characters.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from tmaps.checkpoint import load_checkpoint
from tmaps.data import manifest_loader
from tmaps.introspect import NAP, ColourScale, compute_layout, save_figure
from tmaps.introspect.error_analysis import collect_outcomes, confusion_counts, outcome_groupings, outcome_table, plot_outcome_maps

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--corpus", type=Path, required=True, help="folder with <split>.jsonl manifests")
    parser.add_argument("--split", default="dev")
    parser.add_argument("--layer", default=None, help="layer to map; default the last conv layer")
    parser.add_argument("--characters", type=int, default=4, help="map this many of the most misread characters")
    parser.add_argument("--min-count", type=int, default=20, help="characters with fewer correct or wrong frames are not mapped")
    parser.add_argument(
        "--limit-percentile",
        type=float,
        default=99.0,
        help="colour limit: this percentile of |profile values| of the layer (a few units far out would otherwise wash out the maps)",
    )
    parser.add_argument("--figure", type=Path, default=ROOT / "docs" / "figures" / "error_maps.png")
    parser.add_argument("--cache", type=Path, default=ROOT / "logs" / "error_maps")
    arguments = parser.parse_args()
    torch.set_num_threads(2)

    loaded = load_checkpoint(arguments.checkpoint)
    layer = arguments.layer or loaded.model.layer_names[-2]
    loader = manifest_loader(arguments.corpus, arguments.split, loaded.features, arguments.cache)

    by_record = collect_outcomes(loaded.model, loader, loaded.alphabet)
    outcome, _ = outcome_groupings(by_record)
    profiles = NAP(loaded.model, [layer]).compute(loader, outcome)
    table = outcome_table(by_record, profiles, layer)
    print(f"{arguments.checkpoint} on {arguments.corpus / arguments.split}: per character, layer {layer}")
    print(table.to_string(index=False, float_format="{:.3f}".format))
    print("\nmost frequent confusions")
    confusions = confusion_counts(by_record)
    print(confusions[confusions.target != confusions.predicted].head(12).to_string(index=False, float_format="{:.3f}".format))

    counts = profiles.group_counts[layer]
    mappable = table[
        [min(counts.get(f"{c}:correct", 0), counts.get(f"{c}:wrong", 0)) >= arguments.min_count for c in table.character]
    ]
    characters = list(mappable.character[: arguments.characters])
    if not characters:
        raise SystemExit(f"no character has {arguments.min_count} correct and wrong frames; lower --min-count")
    coords = compute_layout("umap", profiles.matrix(layer))
    scale = ColourScale.robust(profiles[layer].mean, arguments.limit_percentile, scope=" of the layer's profiles")
    figure = plot_outcome_maps(coords, profiles, layer, characters, title=f"{layer}: correct vs wrong frames (UMAP layout)", limit=scale)
    print(f"figure: {save_figure(figure, arguments.figure)}")
    error_rate = table.errors.sum() / table["count"].sum()
    distance = mappable.profile_distance[: len(characters)].mean()
    print(f"character error rate {error_rate:.3f}; mean correct/wrong profile distance of {''.join(characters)} at {layer}: {distance:.3f}")


if __name__ == "__main__":
    main()

"""Planted-bias study: corrupt one character's labels, train clean and biased models over seeds,
and find a profile measure that tells them apart.

1. Synthesize a small English corpus (``tmaps.data.synth``) and write a biased copy of its
   train manifest in which every ``s`` of the transcripts is labelled ``z`` (the audio and the
   dev/test splits stay as they are). ``s`` is frequent enough for a few minutes of CPU
   training to pick the bias up; ``--source v --target f`` plants the rarer v→f bias.
2. Train the same small model on the clean and on the biased corpus for every seed
   (``tmaps-train`` via the Hydra compose API, a fixed time budget each; the seed sets the
   initialisation and the batch order, the corpus is the same).
3. On the clean test split, for every model: character NAPs of the last layers (frames of
   each character from the synthetic word timings, so all models see the same frames) and
   these candidate measures:

   - ``output_preference``: on spoken ``s``, the output layer's NAP of unit ``z`` minus that of
     unit ``s`` (centred log-probabilities: how much more the model leans to ``z`` than to ``s``
     where ``s`` is spoken, relative to its other characters);
   - ``distance_<layer>``: the distance of the ``s`` and ``z`` profiles at an inner layer over
     the median distance of all pairs of character profiles there (below 1: ``s`` and ``z``
     are closer than a typical pair);
   - ``cos_<layer>``: their cosine similarity;
   - ``rate``: the share of spoken ``s`` that greedy decoding writes as ``z``
     (:mod:`tmaps.introspect.error_analysis`; the error analysis, not a profile measure).

4. ``docs/results/planted_bias.{csv,md}``: one row per model and seed; a measure separates the
   models when every biased value lies beyond every clean one.
5. Maps of ``s``, ``z`` and ``s − z`` for the first seed's models: ``docs/figures/planted_bias.png``.

    python scripts/planted_bias.py --minutes 3 --seeds 0 1 2

The last line printed names the measures that separate clean from biased models with no overlap.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from matplotlib.figure import Figure
from omegaconf import open_dict
from scipy.spatial.distance import cosine, pdist

from tmaps.checkpoint import load_checkpoint
from tmaps.commands.train import train
from tmaps.data import manifest_loader
from tmaps.data.manifest import read_manifest, write_manifest
from tmaps.data.synth import synthesize_corpus
from tmaps.introspect import NAP, MapStyle, compute_layout, save_figure
from tmaps.introspect.error_analysis import collect_outcomes, confusion_counts
from tmaps.introspect.render import plot_layers
from tmaps.training.resolvers import register_resolvers

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ("train", "dev", "test")


def corpus_config(n_train: int) -> dict:
    return {
        "kind": "synth",
        "language": "en",
        "n_utterances": {"train": n_train, "dev": 40, "test": 120},
        "words_per_utterance": [3, 6],
        "vocabulary_size": 1000,
        "seed": 0,
    }


def build_corpora(work_dir: Path, n_train: int, source: str, target: str) -> tuple[Path, Path]:
    """The clean synthetic corpus and a copy whose train transcripts write ``source`` as ``target``."""
    clean = synthesize_corpus(corpus_config(n_train), work_dir / "data", num_workers=2)
    biased = work_dir / "biased_corpus"
    for split in SPLITS:
        records = read_manifest(clean / f"{split}.jsonl")
        if split == "train":
            records = [{**record, "text": record["text"].replace(source, target)} for record in records]
        write_manifest(records, biased / f"{split}.jsonl")
    return clean, biased


def train_model(corpus: Path, run_dir: Path, minutes: float, channels: list[int], seed: int) -> Path:
    """Train on a corpus folder of manifests within ``minutes``; returns ``last.ckpt`` (reused if present)."""
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    if checkpoint.is_file():
        return checkpoint
    overrides = [
        "data=manifest",
        f"data.source.path={corpus}",
        "data.source.splits={train:train.jsonl,dev:dev.jsonl,test:test.jsonl}",
        f"paths.data_dir={run_dir / 'cache'}",
        f"paths.output_dir={run_dir}",
        f"seed={seed}",
        "data.batching.num_workers=0",
        "data.batching.max_batch_seconds=40",
        "data.spec_augment=null",  # short runs learn faster without augmentation and dropout (see the quickstart)
        "model.dropout=0",
        f"model.channels=[{','.join(map(str, channels))}]",
        "logger=csv",
        "~callbacks.topographic_maps",
        "~callbacks.activation_profiles",
        "trainer.max_epochs=1000",
        f"trainer.max_time='00:00:{int(minutes):02d}:{round(minutes % 1 * 60):02d}'",
        "trainer.log_every_n_steps=5",
        "optim.lr=3e-3",
        "optim.warmup_steps=30",
        "optim.schedule=constant",
        "test=false",
    ]
    register_resolvers()
    with initialize_config_module(config_module="tmaps.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra
    train(cfg)
    return checkpoint


def analyse(checkpoint: Path, corpus: Path, cache: Path, layers: list[str], source: str, target: str) -> dict:
    """The candidate measures (module docstring) of one model on the clean test split, its character
    profiles and how it writes the spoken ``source``."""
    loaded = load_checkpoint(checkpoint)
    loader = manifest_loader(corpus, "test", loaded.features, cache, max_batch_seconds=40)
    profiles = NAP(loaded.model, layers).compute(loader, "character")
    source_row, target_row = profiles.groups.index(source), profiles.groups.index(target)
    head = profiles["head"].mean[source_row]
    measures = {"output_preference": float(head[loaded.alphabet.index(target)] - head[loaded.alphabet.index(source)])}
    for layer in layers[:-1]:
        mean = profiles[layer].mean
        measures[f"distance_{layer}"] = float(np.linalg.norm(mean[source_row] - mean[target_row]) / np.median(pdist(mean)))
        measures[f"cos_{layer}"] = float(1 - cosine(mean[source_row], mean[target_row]))
    confusions = confusion_counts(collect_outcomes(loaded.model, loader, loaded.alphabet))
    spoken = confusions[confusions.target == source]
    measures["rate"] = float(spoken[spoken.predicted == target]["count"].sum() / spoken["count"].sum())
    classes = ["blank", *loaded.alphabet.chars]
    return {"profiles": profiles, "measures": measures, "confusions": spoken, "output_profile": (classes, head)}


def separation(table: pd.DataFrame) -> pd.DataFrame:
    """Per measure: the clean and biased ranges over seeds, and whether they overlap."""
    rows = []
    for measure in table.columns.drop(["model", "seed"]):
        clean, biased = table.loc[table.model == "clean", measure], table.loc[table.model == "biased", measure]
        gap = max(biased.min() - clean.max(), clean.min() - biased.max())
        rows.append(
            {
                "measure": measure,
                "clean": f"{clean.min():.3f} .. {clean.max():.3f}",
                "biased": f"{biased.min():.3f} .. {biased.max():.3f}",
                "separates": bool(gap > 0),
            }
        )
    return pd.DataFrame(rows)


def compare_over_seeds(
    corpora: dict[str, Path], work_dir: Path, minutes: float, channels: list[int], seeds: list[int], score: Callable[[Path], dict]
) -> tuple[pd.DataFrame, dict[str, dict]]:
    """Train a model on every corpus (``"clean"``, ``"biased"``) for every seed and ``score`` its checkpoint.

    Returns:
        One row per model and seed (``model``, ``seed`` and the result's ``measures``), and the
        first seed's results by corpus name.
    """
    rows, first_seed = [], {}
    for seed in seeds:
        for name, corpus in corpora.items():
            result = score(train_model(corpus, work_dir / f"{name}_seed{seed}", minutes, channels, seed))
            rows.append({"model": name, "seed": seed, **result["measures"]})
            if seed == seeds[0]:
                first_seed[name] = result
    return pd.DataFrame(rows), first_seed


def write_tables(table: pd.DataFrame, results_dir: Path, stem: str, heading: str) -> pd.DataFrame:
    """``<stem>.csv`` and ``<stem>.md`` (``heading``, the table, its :func:`separation`), both printed; returns the separation."""
    summary = separation(table)
    results_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(results_dir / f"{stem}.csv", index=False, float_format="%.4f")
    markdown = table.to_markdown(index=False, floatfmt=".3f") + "\n\n" + summary.to_markdown(index=False)
    (results_dir / f"{stem}.md").write_text(f"{heading}\n\n{markdown}\n")
    print("\n" + table.to_string(index=False, float_format="{:.3f}".format))
    print("\n" + summary.to_string(index=False))
    return summary


def bias_figure(results: dict[str, dict], layer: str, source: str, target: str):
    """Rows ``source``, ``target``, ``source − target``; one column per model, each on its own PCA layout."""
    columns = {}
    for name, result in results.items():
        profiles = result["profiles"]
        mean, groups = profiles[layer].mean, profiles.groups
        values = np.stack([mean[groups.index(source)], mean[groups.index(target)]])
        values = np.concatenate([values, values[:1] - values[1:]])
        columns[f"{name} model, {layer}"] = (compute_layout("pca", profiles.matrix(layer)), values)
    return plot_layers(
        columns,
        [source, target, f"{source} − {target}"],
        colorbar_label=profiles.quantity,
        order=False,
        style=MapStyle(show_units=False, panel_size=1.6),
        title=f"planted bias: '{source}' labelled '{target}' in training; each model on its own layout, all on one colour scale",
    )


def output_figure(results: dict[str, dict], source: str, target: str) -> Figure:
    """Per model a bar per output unit: its NAP on the spoken ``source`` (the output layer's profile row)."""
    figure = Figure(figsize=(8, 2.2 * len(results)), layout="constrained")
    axes = figure.subplots(len(results), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (name, result) in zip(axes, results.items()):
        classes, values = result["output_profile"]
        colours = ["tab:blue" if c == source else "tab:red" if c == target else "0.7" for c in classes]
        ax.bar(range(len(classes)), values, color=colours)
        ax.axhline(0, color="k", linewidth=0.5)
        ax.set_ylabel("NAP (center)")
        ax.set_title(f"{name} model: output units on spoken '{source}' ({source} blue, {target} red)", fontsize=9)
    axes[-1].set_xticks(range(len(classes)), ["␣" if c == " " else c for c in classes], fontsize=8)
    return figure


def study_parser(description: str, name: str, seeds: list[int], train_utterances: int, train_help: str | None = None) -> argparse.ArgumentParser:
    """The options of a bias study (:func:`compare_over_seeds`): folders, training time, seeds, corpus and model size."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--work-dir", type=Path, default=ROOT / "logs" / name)
    parser.add_argument("--figures", type=Path, default=ROOT / "docs" / "figures")
    parser.add_argument("--results", type=Path, default=ROOT / "docs" / "results")
    parser.add_argument("--minutes", type=float, default=3.0, help="training time of each model")
    parser.add_argument("--seeds", type=int, nargs="+", default=seeds)
    parser.add_argument("--train-utterances", type=int, default=train_utterances, help=train_help)
    parser.add_argument("--channels", type=int, nargs="+", default=[64] * 8 + [128, 128])
    return parser


def main() -> None:
    parser = study_parser(__doc__.split("\n\n")[0], "planted_bias", seeds=[0, 1, 2], train_utterances=800)
    parser.add_argument("--source", default="s", help="the character whose labels are corrupted")
    parser.add_argument("--target", default="z", help="what it is labelled as")
    arguments = parser.parse_args()
    torch.set_num_threads(2)
    clean, biased = build_corpora(arguments.work_dir, arguments.train_utterances, arguments.source, arguments.target)
    n_layers = len(arguments.channels)
    layers = [f"conv{n_layers - 3}", f"conv{n_layers - 2}", f"conv{n_layers - 1}", "head"]

    def score(checkpoint: Path) -> dict:
        result = analyse(checkpoint, clean, arguments.work_dir / "cache", layers, arguments.source, arguments.target)
        print(f"\n{checkpoint.parents[1].name}: how the clean test split's '{arguments.source}' is written")
        print(result["confusions"].to_string(index=False))
        return result

    corpora = {"clean": clean, "biased": biased}
    table, first_seed = compare_over_seeds(corpora, arguments.work_dir, arguments.minutes, arguments.channels, arguments.seeds, score)
    seeds = " ".join(map(str, arguments.seeds))
    heading = (
        f"Planted bias '{arguments.source}' labelled '{arguments.target}' (`python scripts/planted_bias.py --minutes {arguments.minutes:g} --seeds {seeds}`)"
    )
    summary = write_tables(table, arguments.results, "planted_bias", heading)
    figure = bias_figure(first_seed, layers[-2], arguments.source, arguments.target)
    print(f"figure: {save_figure(figure, arguments.figures / 'planted_bias.png')}")
    figure = output_figure(first_seed, arguments.source, arguments.target)
    print(f"figure: {save_figure(figure, arguments.figures / 'planted_bias_output.png')}")
    separating = summary.loc[summary.separates, "measure"].tolist()
    print(f"measures separating clean from biased over seeds {arguments.seeds}: {', '.join(separating) or 'none'}")


if __name__ == "__main__":
    main()

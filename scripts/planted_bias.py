"""Planted-bias demo: corrupt one character's labels, train, and let the maps show it.

1. Synthesize a small English corpus (``tmaps.data.synth``) and write a biased copy of its
   train manifest in which every ``s`` of the transcripts is labelled ``z`` (the audio and the
   dev/test splits stay as they are). ``s`` is frequent enough for a few minutes of CPU
   training to pick the bias up; ``--source v --target f`` plants the rarer v→f bias.
2. Train the same small model on the clean and on the biased corpus (``tmaps-train`` via the
   Hydra compose API, a fixed time budget each).
3. On the clean test split, for both models: character NAPs of the last layers (frames of
   each character from the synthetic word timings, so both models see the same frames), the
   cosine similarity of the ``s`` and ``z`` profiles per layer, the response of the output
   unit of ``z`` to spoken ``s`` (its centred NAP), and the share of spoken ``s`` that greedy
   decoding writes as ``z`` (:mod:`tmaps.introspect.errors`).
4. Maps of ``s``, ``z`` and ``s − z`` for both models: ``docs/figures/planted_bias.png``.

    python scripts/planted_bias.py --minutes 3.5

The last line printed is the key figure, clean against biased: the s→z rate, the ``z``
output unit's response to ``s`` and the last conv layer's s/z profile similarity.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict
from scipy.spatial.distance import cosine

from tmaps.checkpoint import load_checkpoint
from tmaps.commands.train import train
from tmaps.data import manifest_loader
from tmaps.data.manifest import read_manifest, write_manifest
from tmaps.data.synth import synthesize_corpus
from tmaps.introspect import NAP, MapStyle, compute_layout, save_figure
from tmaps.introspect.errors import collect_outcomes, confusion_counts
from tmaps.introspect.render import plot_layers

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


def train_model(corpus: Path, run_dir: Path, minutes: float, channels: list[int]) -> Path:
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
    with initialize_config_module(config_module="tmaps.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra
    train(cfg)
    return checkpoint


def analyse(checkpoint: Path, corpus: Path, cache: Path, layers: list[str], source: str, target: str) -> dict:
    """Character profiles, source/target similarity per layer, the target output unit's response to the
    source and the source→target rate of one model on the clean test split."""
    loaded = load_checkpoint(checkpoint)
    loader = manifest_loader(corpus, "test", loaded.features, cache, max_batch_seconds=40)
    profiles = NAP(loaded.model, layers).compute(loader, "character")
    groups = profiles.groups
    similarity = {
        layer: 1 - cosine(profiles[layer].mean[groups.index(source)], profiles[layer].mean[groups.index(target)])
        for layer in layers
    }
    target_unit_response = float(profiles["head"].mean[groups.index(source), loaded.alphabet.index(target)])
    confusions = confusion_counts(collect_outcomes(loaded.model, loader, loaded.alphabet))
    spoken = confusions[confusions.target == source]
    as_target = spoken[spoken.predicted == target]["count"].sum()
    return {
        "profiles": profiles,
        "similarity": similarity,
        "rate": float(as_target / spoken["count"].sum()),
        "target_unit_response": target_unit_response,
        "confusions": spoken,
    }


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
        order=False,
        style=MapStyle(show_units=False, panel_size=1.6),
        title=f"planted bias: '{source}' labelled '{target}' in training",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", type=Path, default=ROOT / "logs" / "planted_bias")
    parser.add_argument("--figures", type=Path, default=ROOT / "docs" / "figures")
    parser.add_argument("--minutes", type=float, default=3.5, help="training time of each model")
    parser.add_argument("--train-utterances", type=int, default=800)
    parser.add_argument("--channels", type=int, nargs="+", default=[64] * 8 + [128, 128])
    parser.add_argument("--source", default="s", help="the character whose labels are corrupted")
    parser.add_argument("--target", default="z", help="what it is labelled as")
    arguments = parser.parse_args()
    torch.set_num_threads(2)
    clean, biased = build_corpora(arguments.work_dir, arguments.train_utterances, arguments.source, arguments.target)
    n_layers = len(arguments.channels)
    layers = [f"conv{n_layers - 3}", f"conv{n_layers - 2}", f"conv{n_layers - 1}", "head"]
    results = {}
    for name, corpus in (("clean", clean), ("biased", biased)):
        checkpoint = train_model(corpus, arguments.work_dir / name, arguments.minutes, arguments.channels)
        results[name] = analyse(checkpoint, clean, arguments.work_dir / "cache", layers, arguments.source, arguments.target)
        print(f"\n{name} model: how the clean test split's '{arguments.source}' is written")
        print(results[name]["confusions"].to_string(index=False))
    table = pd.DataFrame({name: result["similarity"] for name, result in results.items()})
    table.index.name = f"cos({arguments.source}, {arguments.target})"
    print("\ncosine similarity of the character profiles per layer\n" + table.to_string(float_format="{:.3f}".format))
    figure = bias_figure(results, layers[-2], arguments.source, arguments.target)
    print(f"figure: {save_figure(figure, arguments.figures / 'planted_bias.png')}")
    clean_result, biased_result = results["clean"], results["biased"]
    print(
        f"{arguments.source}→{arguments.target} rate clean {clean_result['rate']:.3f} biased {biased_result['rate']:.3f}; "
        f"'{arguments.target}' unit response to '{arguments.source}' clean {clean_result['target_unit_response']:.3f} "
        f"biased {biased_result['target_unit_response']:.3f}; "
        f"{layers[-2]} profile similarity clean {clean_result['similarity'][layers[-2]]:.3f} "
        f"biased {biased_result['similarity'][layers[-2]]:.3f}"
    )


if __name__ == "__main__":
    main()

"""Data-set bias study: a model trained on male voices only, against one trained on all voices.

1. Synthesize the small English corpus of ``planted_bias.py`` (4 male and 4 female espeak-ng
   voices, in turn) and write a biased train manifest that keeps the male utterances only; the
   clean train manifest keeps as many utterances of all voices. Dev and test keep every voice.
2. Train the same small model on each for every seed (``planted_bias.train_model``).
3. On the test split, for every model: the character error rate of female and of male voices
   (greedy decoding against forced-aligned characters, :mod:`tmaps.introspect.error_analysis`), and
   speaker NAPs (one group per voice) of inner layers. The candidate measure is the
   ``gender_separation`` of a layer: the mean distance between a female and a male voice's
   profile over the mean distance between two voices of the same gender. A model that never
   heard a female voice should set them apart.
4. ``docs/results/gender_bias.{csv,md}`` and ``docs/figures/gender_bias.png``: the speaker NAP
   maps of the first seed's models, one panel per voice.

    python scripts/gender_bias.py --minutes 3 --seeds 0 1

The last line printed gives, per model, the CER gap (female − male) and the gender separation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from planted_bias import SPLITS, compare_over_seeds, corpus_config, study_parser, write_tables
from scipy.spatial.distance import cdist, pdist

from tmaps.checkpoint import load_checkpoint
from tmaps.data import manifest_loader
from tmaps.data.manifest import read_manifest, write_manifest
from tmaps.data.synth import synthesize_corpus
from tmaps.introspect import NAP, MapStyle, compute_layout, save_figure
from tmaps.introspect.error_analysis import collect_outcomes
from tmaps.introspect.render import plot_layers


def build_corpora(work_dir: Path, n_train: int) -> tuple[Path, Path]:
    """The all-voices corpus folder and a biased one; both have ``n_train // 2`` train utterances."""
    full = synthesize_corpus(corpus_config(n_train), work_dir / "data", num_workers=2)
    train = read_manifest(full / "train.jsonl")
    male = [record for record in train if record["gender"] == "male"]
    folders = {"clean": work_dir / "clean_corpus", "biased": work_dir / "biased_corpus"}
    for name, records in (("clean", train[: len(male)]), ("biased", male)):
        write_manifest(records, folders[name] / "train.jsonl")
        for split in SPLITS[1:]:
            write_manifest(read_manifest(full / f"{split}.jsonl"), folders[name] / f"{split}.jsonl")
    return folders["clean"], folders["biased"]


def gender_separation(profiles: np.ndarray, genders: list[str]) -> float:
    """Mean female-male distance of speaker profiles ``(speakers, units)`` over the mean same-gender distance."""
    female, male = np.array(genders) == "female", np.array(genders) == "male"
    between = cdist(profiles[female], profiles[male]).mean()
    within = np.concatenate([pdist(profiles[female]), pdist(profiles[male])]).mean()
    return float(between / within)


def analyse(checkpoint: Path, corpus: Path, cache: Path, layers: list[str]) -> dict:
    """CER by gender and the gender separation of every layer's speaker NAPs on the test split."""
    loaded = load_checkpoint(checkpoint)
    loader = manifest_loader(corpus, "test", loaded.features, cache, max_batch_seconds=40)
    gender_of = {record["id"]: record["gender"] for record in read_manifest(corpus / "test.jsonl")}
    errors, totals = {"female": 0, "male": 0}, {"female": 0, "male": 0}
    for record_id, outcomes in collect_outcomes(loaded.model, loader, loaded.alphabet).items():
        gender = gender_of[record_id]
        totals[gender] += len(outcomes)
        errors[gender] += sum(target != predicted for target, predicted, _, _ in outcomes)
    profiles = NAP(loaded.model, layers).compute(loader, "speaker")
    genders = _voice_genders(corpus, profiles.groups)
    measures = {f"cer_{gender}": errors[gender] / totals[gender] for gender in ("female", "male")}
    measures["cer_gap"] = measures["cer_female"] - measures["cer_male"]
    for layer in layers:
        measures[f"gender_separation_{layer}"] = gender_separation(profiles[layer].mean, genders)
    return {"profiles": profiles, "measures": measures}


def _voice_genders(corpus: Path, voices: list[str]) -> list[str]:
    gender = {record["speaker"]: record["gender"] for record in read_manifest(corpus / "test.jsonl")}
    return [gender[voice] for voice in voices]


def speaker_figure(results: dict[str, dict], layer: str):
    """One column per model (its own PCA layout), one row per voice: the speaker NAPs of ``layer``."""
    columns = {}
    for name, result in results.items():
        profiles = result["profiles"]
        columns[f"{name} model, {layer}"] = (compute_layout("pca", profiles.matrix(layer)), profiles[layer].mean)
    first = next(iter(results.values()))["profiles"]
    return plot_layers(
        columns, first.groups, colorbar_label=first.quantity, order=False, style=MapStyle(show_units=False, panel_size=1.3),
        title="speaker NAPs: trained on male voices only? Each model on its own layout (their units differ), all on one colour scale",
    )  # fmt: skip


def main() -> None:
    parser = study_parser(
        __doc__.split("\n\n")[0], "gender_bias", seeds=[0, 1], train_utterances=1600, train_help="before the biased split keeps the male half"
    )
    arguments = parser.parse_args()
    torch.set_num_threads(2)
    clean, biased = build_corpora(arguments.work_dir, arguments.train_utterances)
    n_layers = len(arguments.channels)
    layers = [f"conv{n_layers - 7}", f"conv{n_layers - 5}", f"conv{n_layers - 3}", f"conv{n_layers - 1}"]
    corpora = {"clean": clean, "biased": biased}
    table, first_seed = compare_over_seeds(
        corpora, arguments.work_dir, arguments.minutes, arguments.channels, arguments.seeds,
        lambda checkpoint: analyse(checkpoint, clean, arguments.work_dir / "cache", layers),
    )  # fmt: skip
    seeds = " ".join(map(str, arguments.seeds))
    heading = f"Trained on male voices only (biased) or on all voices (clean) (`python scripts/gender_bias.py --minutes {arguments.minutes:g} --seeds {seeds}`)"
    write_tables(table, arguments.results, "gender_bias", heading)
    print(f"figure: {save_figure(speaker_figure(first_seed, layers[-2]), arguments.figures / 'gender_bias.png')}")
    means = table.groupby("model")[["cer_gap", f"gender_separation_{layers[-2]}"]].mean()
    print("; ".join(f"{model}: CER female - male {row.iloc[0]:+.3f}, gender separation {layers[-2]} {row.iloc[1]:.2f}" for model, row in means.iterrows()))


if __name__ == "__main__":
    main()

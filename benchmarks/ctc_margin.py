"""CTC's margin on a corpus at a model's output frame rate: output frames per frame that a CTC alignment needs.

CTC emits one label per output frame at most, and needs a blank between two equal labels in a row, so an
utterance of ``n`` labels with ``r`` repeats needs ``n + r`` output frames (``tmaps.data.dataset.ctc_frames_needed``;
training drops the utterances that have fewer). For every utterance of the corpus's manifests this compares that
need with the output frames the model gives it: over the whole utterance (``model.output_lengths`` of its
feature frames) and over its speech alone (first word start to last word end, where the manifest has word
segments), for the fastest speakers. Speed perturbation is included: a synthetic corpus writes the durations and
segment times of the audio as written.

    python benchmarks/ctc_margin.py <corpus folder> [--models small,small_s4] [--splits train,dev,test,test_unseen] [--record]

Per model: labels per second of speech (median, max); the margin over the whole utterance (its minimum, and the
utterances below 1, which training drops) and over the speech alone (minimum, 1st percentile, median, utterances
below 1 and 1.5). The last line gives each model's smallest margin over the speech alone. ``--record`` also writes
these values to ``docs/results/benchmarks/ctc_margin-<corpus folder's name>.json`` (``records.py``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import yaml
from records import add_record_option, write_record

import tmaps.conf
from tmaps.data.dataset import ctc_frames_needed
from tmaps.data.features import FRAME_RATE, SAMPLE_RATE, num_frames
from tmaps.data.manifest import read_manifest
from tmaps.models import build_model
from tmaps.text import Alphabet


def preset_model(name: str, n_classes: int) -> torch.nn.Module:
    config = yaml.safe_load((Path(tmaps.conf.__file__).parent / "model" / f"{name}.yaml").read_text())
    return build_model({**config, "n_features": 40, "n_classes": n_classes})


def margins(records: list[dict], alphabet: Alphabet, model: torch.nn.Module) -> dict[str, np.ndarray]:
    """Per utterance: the frames CTC needs, labels per second of speech, and output frames per needed frame (whole, speech)."""
    needed = np.array([ctc_frames_needed(alphabet.encode(record["text"])) for record in records])
    feature_frames = torch.tensor([num_frames(round(record["duration"] * SAMPLE_RATE)) for record in records])
    output_frames = model.output_lengths(feature_frames).numpy()
    speech_s = np.array([record["words"][-1][2] - record["words"][0][1] if record.get("words") else record["duration"] for record in records])
    return {
        "needed": needed,
        "labels_per_s": needed / speech_s,
        "whole": output_frames / needed,
        "speech": speech_s * FRAME_RATE / model.stride / needed,
    }


def summary(measured: dict[str, np.ndarray], output_fps: float) -> dict[str, float | int]:
    """One model's row: labels per second of speech (median, max), the margin over the whole utterance and over the speech alone."""
    rate, whole, speech = measured["labels_per_s"], measured["whole"], measured["speech"]
    return {
        "output_fps": output_fps,
        "labels_per_s_median": float(np.median(rate)),
        "labels_per_s_max": float(rate.max()),
        "whole_min": float(whole.min()),
        "whole_below_1": int((whole < 1).sum()),
        "speech_min": float(speech.min()),
        "speech_p1": float(np.percentile(speech, 1)),
        "speech_median": float(np.median(speech)),
        "speech_below_1": int((speech < 1).sum()),
        "speech_below_1_5": int((speech < 1.5).sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path, help="folder of train.jsonl, dev.jsonl, ...")
    parser.add_argument("--models", default="small,small_s4", help="model presets of conf/model, comma separated")
    parser.add_argument("--splits", default="train,dev,test,test_unseen")
    parser.add_argument("--language", default="en", help="selects the alphabet")
    add_record_option(parser)
    args = parser.parse_args()

    alphabet = Alphabet.for_language(args.language)
    manifests = [args.corpus / f"{split}.jsonl" for split in args.splits.split(",")]
    records = [record for manifest in manifests if manifest.is_file() for record in read_manifest(manifest)]
    if not records:
        raise SystemExit(f"ctc_margin: {args.corpus} has no manifest of the splits {args.splits}")
    print(f"{args.corpus.name}: {len(records)} utterances of {args.splits}")
    print(
        f"{'model':<12}{'out fps':>8}{'labels/s median':>16}{'max':>6}{'whole: min':>11}{'< 1':>5}"
        f"{'speech: min':>12}{'1%':>6}{'median':>7}{'< 1':>5}{'< 1.5':>7}"
    )
    per_model = {}
    for name in args.models.split(","):
        model = preset_model(name, alphabet.n_classes)
        per_model[name] = summary(margins(records, alphabet, model), FRAME_RATE / model.stride)
        row = per_model[name]
        print(
            f"{name:<12}{row['output_fps']:>8.1f}{row['labels_per_s_median']:>16.1f}{row['labels_per_s_max']:>6.1f}"
            f"{row['whole_min']:>11.2f}{row['whole_below_1']:>5}{row['speech_min']:>12.2f}{row['speech_p1']:>6.2f}"
            f"{row['speech_median']:>7.2f}{row['speech_below_1']:>5}{row['speech_below_1_5']:>7}"
        )
    if args.record:
        measured = {"corpus": args.corpus.name, "splits": args.splits.split(","), "utterances": len(records), "models": per_model}
        write_record(args.record, f"ctc_margin-{args.corpus.name}", measured)
    print("ctc_margin: smallest output frames per needed frame over the speech: " + ", ".join(
        f"{name} {row['speech_min']:.2f}" for name, row in per_model.items()
    ))


if __name__ == "__main__":
    main()

"""Real-time factor of the synthetic corpus on one core, against the issue's target of 200x.

Synthesizes a corpus of N utterances with one worker process (espeak-ng, resampling,
alignment, FLAC writing, manifests), then speaks the same utterances again in-process with
:class:`tmaps.data.synth.Espeak` alone (no FLAC, no processes) to show what the rest costs.

    python benchmarks/synth_speed.py [--utterances 400] [--language en]
"""

from __future__ import annotations

import os

for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[variable] = "1"

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from tmaps.data.manifest import read_manifest  # noqa: E402
from tmaps.data.synth import Espeak, SynthConfig, synthesize_corpus, vocabulary  # noqa: E402

TARGET_FACTOR = 200


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utterances", type=int, default=400)
    parser.add_argument("--language", default="en")
    args = parser.parse_args()
    counts = {"train": args.utterances, "dev": 0, "test": 0, "test_unseen": 0}
    config = SynthConfig(language=args.language, n_utterances=counts)
    vocabulary(config.language, config.vocabulary_size)  # loaded once per process; not part of the speed
    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        folder = synthesize_corpus(config, root, num_workers=1)
        corpus_seconds = time.perf_counter() - start
        records = read_manifest(folder / "train.jsonl")
    audio_seconds = sum(record["duration"] for record in records)

    espeak = Espeak()
    start = time.perf_counter()
    for record in records:
        espeak.synthesize(record["text"], record["speaker"], record["rate"], record["pitch"])
    espeak_seconds = time.perf_counter() - start

    corpus_factor = audio_seconds / corpus_seconds
    print(f"{len(records)} utterances, {audio_seconds / 60:.1f} min of audio (timings on a shared machine are noisy)")
    print(f"espeak-ng with alignment, in-process, no FLAC: {audio_seconds / espeak_seconds:.0f}x real time")
    verdict = "met" if corpus_factor >= TARGET_FACTOR else "MISSED"
    print(f"corpus (1 worker, FLAC, manifests): {corpus_seconds:.1f} s; target {TARGET_FACTOR}x: {verdict}")
    print(f"real-time factor: {corpus_factor:.0f}x")


if __name__ == "__main__":
    main()

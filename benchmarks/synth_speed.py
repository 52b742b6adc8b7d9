"""Real-time factor of the synthetic corpus on one core: the plain preset (target 200x) and the
hard one, with speed perturbation, rooms, babble and noise (target 100x).

Synthesizes N utterances of each preset (``data=synth_<language>`` and
``data=synth_<language>_hard``, composed from the package's Hydra configs) with one worker
process (espeak-ng, resampling, alignment, realism, FLAC writing, manifests), then speaks the
plain utterances again in-process with :class:`tmaps.data.synth.Espeak` alone (no FLAC, no
processes) to show what the rest costs.

    python benchmarks/synth_speed.py [--utterances 400] [--language en]
"""

from __future__ import annotations

import os

for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[variable] = "1"

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from hydra import compose, initialize_config_module  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from tmaps.data.manifest import read_manifest  # noqa: E402
from tmaps.data.synth import Espeak, SynthConfig, synthesize_corpus, vocabulary  # noqa: E402

TARGETS = {"plain": 200, "hard": 100}


def preset(language: str, name: str, utterances: int) -> SynthConfig:
    """The ``data.source`` of a packaged data config, with ``utterances`` train utterances only."""
    with initialize_config_module("tmaps.conf", version_base="1.3"):
        cfg = compose("train", overrides=[f"data={name}"])
    source = OmegaConf.to_container(cfg.data.source, resolve=True)
    source["n_utterances"] = {"train": utterances, "dev": 0, "test": 0, "test_unseen": 0}
    config = SynthConfig.from_mapping(source)
    if config.language != language:
        raise ValueError(f"data={name} is {config.language!r}, not {language!r}")
    return config


def corpus_speed(config: SynthConfig) -> tuple[float, float, list[dict]]:
    """Seconds to build ``config``'s corpus with one worker, seconds of audio, and its records."""
    vocabulary(config.language, config.vocabulary_size)  # loaded once per process; not part of the speed
    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        folder = synthesize_corpus(config, root, num_workers=1)
        seconds = time.perf_counter() - start
        records = read_manifest(folder / "train.jsonl")
    return seconds, sum(record["duration"] for record in records), records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utterances", type=int, default=400)
    parser.add_argument("--language", default="en")
    args = parser.parse_args()
    factors = {}
    for name, data in (("plain", f"synth_{args.language}"), ("hard", f"synth_{args.language}_hard")):
        seconds, audio_seconds, records = corpus_speed(preset(args.language, data, args.utterances))
        factors[name] = audio_seconds / seconds
        verdict = "met" if factors[name] >= TARGETS[name] else "MISSED"
        print(
            f"{name} (data={data}): {len(records)} utterances, {audio_seconds / 60:.1f} min of audio in {seconds:.1f} s "
            f"(1 worker, FLAC, manifests): {factors[name]:.0f}x; target {TARGETS[name]}x: {verdict}"
        )
        if name == "plain":
            espeak = Espeak()
            start = time.perf_counter()
            for record in records:
                espeak.synthesize(record["text"], record["speaker"], record["rate"], record["pitch"])
            print(f"  espeak-ng with alignment alone, in-process, no FLAC: {audio_seconds / (time.perf_counter() - start):.0f}x")
    print("(timings on a shared machine are noisy)")
    print(f"real-time factor: plain {factors['plain']:.0f}x, hard {factors['hard']:.0f}x")


if __name__ == "__main__":
    main()

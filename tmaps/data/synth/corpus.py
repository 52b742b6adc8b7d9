"""The synthetic speech corpus: espeak-ng speech with word and phoneme segments, cached by config.

:func:`synthesize_corpus` writes ``train.jsonl``, ``dev.jsonl``, ``test.jsonl``,
``test_unseen.jsonl`` (records as in docs/design.md) and ``audio/*.flac`` (16 kHz PCM_16)
into ``root / f"synth-{language}-{key}"``, where ``key`` hashes the config, the generator
version and the versions of espeak-ng, wordfreq and pyspellchecker. A complete folder is
reused; a changed config gets a new folder.

The concepts have a module each: the config (:mod:`~tmaps.data.synth.config`), the texts
(:mod:`~tmaps.data.synth.texts`), the acoustic mixing (:mod:`~tmaps.data.synth.mixing`) and the
child processes that speak the chunks (:mod:`~tmaps.data.synth.speaking`).

Determinism: the same config gives byte-identical manifests and audio, whatever the number of workers.

Interruption: the corpus is built in a hidden sibling folder and renamed into place when
complete, so a killed build never leaves a folder that looks complete. Leftovers of killed
builds on this host are removed by the next build of the same config.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
from collections.abc import Mapping
from dataclasses import asdict
from importlib.metadata import version
from pathlib import Path

from tmaps.data.manifest import SPLITS, write_manifest
from tmaps.data.synth.acoustics import import_pyroomacoustics
from tmaps.data.synth.config import SynthConfig
from tmaps.data.synth.espeak import Espeak, check_voice
from tmaps.data.synth.speaking import CHUNK_SIZE, Chunk, speak_chunks
from tmaps.data.synth.texts import utterance_plans, vocabulary

logger = logging.getLogger(__name__)

# Bump when a change to the generator changes its output for the same config.
# 2: noise is shaped at a fast FFT length and cut, so noisy corpora (snr_db) sound different.
# 3: noise is drawn and shaped in float32 (other noise samples) and reverberation convolves in float32 (faster).
GENERATOR_VERSION = 3
CONFIG_FILE = "synth_config.json"
# Fields added after the first corpora were made, with the defaults that leave them out of a
# corpus's key: a plain config's key does not depend on options it does not use.
_LATER_FIELDS = {"speed": None, "babble": None, "reverb": None, "noise_colors": ("pink",)}


def describe(config: SynthConfig) -> dict:
    """Everything the corpus depends on: config, generator and library versions, text file digest."""
    settings = {name: value for name, value in asdict(config).items() if _LATER_FIELDS.get(name, ...) != value}
    if config.text_file is not None:
        settings["text_file"] = hashlib.sha256(Path(config.text_file).read_bytes()).hexdigest()
    return {
        "generator_version": GENERATOR_VERSION,
        "chunk_size": CHUNK_SIZE,
        "espeak_ng": Espeak().version,
        "wordfreq": version("wordfreq"),
        "pyspellchecker": version("pyspellchecker"),
        "config": settings,
    }


def corpus_dir(config: SynthConfig, root: str | os.PathLike) -> Path:
    """The folder of ``config``'s corpus under ``root`` (whether or not it exists yet)."""
    canonical = json.dumps(describe(config), sort_keys=True)
    key = hashlib.sha256(canonical.encode()).hexdigest()[:12]
    return Path(root) / f"synth-{config.language}-{key}"


def _is_complete(folder: Path) -> bool:
    return folder.is_dir() and all((folder / name).is_file() for name in (CONFIG_FILE, *(f"{s}.jsonl" for s in SPLITS)))


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_partials(target: Path) -> None:
    """Remove build folders of ``target`` left by killed processes of this host."""
    prefix = f".{target.name}.partial-{socket.gethostname()}-"
    for partial in target.parent.glob(prefix + "*"):
        pid = partial.name[len(prefix) :]
        if pid.isdigit() and not _process_exists(int(pid)):
            logger.info("removing %s, left by a killed build", partial)
            shutil.rmtree(partial, ignore_errors=True)


def _build(config: SynthConfig, folder: Path, num_workers: int) -> None:
    for voice in (*config.voices, *config.unseen_voices):
        check_voice(voice, config.language)
    if config.reverb is not None:
        import_pyroomacoustics()
    plans = utterance_plans(config)
    needs_words = config.text_file is None or config.babble is not None
    words = vocabulary(config.language, config.vocabulary_size) if needs_words else None
    (folder / "audio").mkdir(parents=True)
    chunks = [
        Chunk(index, config, folder, plans[start : start + CHUNK_SIZE], words)
        for index, start in enumerate(range(0, len(plans), CHUNK_SIZE))
    ]
    records: dict[str, list[dict]] = {split: [] for split in SPLITS}
    for chunk, chunk_records in zip(chunks, speak_chunks(chunks, num_workers)):
        for plan, record in zip(chunk.plans, chunk_records):
            records[plan.split].append(record)
    for split in SPLITS:
        write_manifest(records[split], folder / f"{split}.jsonl")
    (folder / CONFIG_FILE).write_text(json.dumps(describe(config), indent=2, sort_keys=True) + "\n", encoding="utf-8")


def synthesize_corpus(config: SynthConfig | Mapping, root: str | os.PathLike, num_workers: int = 1) -> Path:
    """Build the corpus of ``config`` under ``root`` unless it is there already; return its folder.

    Args:
        config: a :class:`SynthConfig` or a plain mapping for :meth:`SynthConfig.from_mapping`.
        root: folder holding synthetic corpora (``paths.data_dir``).
        num_workers: processes speaking chunks at once; the output does not depend on it.

    Raises:
        ValueError: a bad config (unknown key, voice or value), or a ``text_file`` line
            outside the alphabet.
    """
    if not isinstance(config, SynthConfig):
        config = SynthConfig.from_mapping(config)
    if num_workers < 1:
        raise ValueError(f"num_workers must be at least 1, got {num_workers}")
    target = corpus_dir(config, root)
    if _is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(target)
    partial = target.with_name(f".{target.name}.partial-{socket.gethostname()}-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    logger.info("synthesizing %d utterances into %s", sum(config.n_utterances.values()), target)
    try:
        _build(config, partial, num_workers)
        try:
            os.replace(partial, target)
        except OSError:
            if not _is_complete(target):
                raise
            # Another process finished the same corpus first.
            shutil.rmtree(partial, ignore_errors=True)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return target

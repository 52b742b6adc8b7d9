"""Shared fixtures: tiny synthetic corpora (English and German), synthesized once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tmaps.data.synth import synthesize_corpus
from tmaps.training.resolvers import register_resolvers

# The tests compose configs themselves (hydra.compose), as library code does: the resolvers first.
register_resolvers()


def tiny_synth_config(language: str) -> dict:
    """``data.source`` mapping of a tiny corpus: 32/8/8/8 utterances of 3-6 words, default voices."""
    return {
        "kind": "synth",
        "language": language,
        "n_utterances": {"train": 32, "dev": 8, "test": 8, "test_unseen": 8},
        "words_per_utterance": [3, 6],
        "seed": 0,
    }


@pytest.fixture
def synth_config_en() -> dict:
    """A fresh copy of the config of ``synth_corpus_en`` (safe to modify)."""
    return tiny_synth_config("en")


@pytest.fixture
def synth_config_de() -> dict:
    """A fresh copy of the config of ``synth_corpus_de`` (safe to modify)."""
    return tiny_synth_config("de")


@pytest.fixture(scope="session")
def synth_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's ``paths.data_dir``: synthetic corpora built by the fixtures live here."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def synth_corpus_en(synth_data_dir: Path) -> Path:
    """Folder of the tiny English corpus: ``{train,dev,test,test_unseen}.jsonl`` and ``audio/``."""
    return synthesize_corpus(tiny_synth_config("en"), synth_data_dir)


@pytest.fixture(scope="session")
def synth_corpus_de(synth_data_dir: Path) -> Path:
    """Folder of the tiny German corpus: ``{train,dev,test,test_unseen}.jsonl`` and ``audio/``."""
    return synthesize_corpus(tiny_synth_config("de"), synth_data_dir)

"""The texts of the synthetic corpus, and the plan of every utterance.

Texts are word sequences drawn from the ``vocabulary_size`` most frequent wordfreq words
(weighted by frequency), or the sentences of ``text_file``, dealt out to the splits.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from tmaps.data.manifest import SPLITS
from tmaps.data.synth.config import SynthConfig
from tmaps.text import Alphabet, normalize

# wordfreq's lists hold fragments of contractions ("s", "t", "d") and spelled letters as
# words; only these single letters are words of their own.
_SINGLE_LETTER_WORDS = {"en": frozenset({"a", "i"})}


@dataclass(frozen=True)
class UtterancePlan:
    """One utterance to speak: its text is ``sentence`` or, when None, drawn from the vocabulary."""

    split: str
    index: int
    sentence: str | None = None
    line_number: int | None = None


def _restore_eszett(words: list[str]) -> list[str]:
    """German words with the ß that wordfreq's case folding turned into "ss" ("strasse" -> "straße").

    Each "ss" stays or becomes "ß", whichever spelling pyspellchecker's German word counts
    (which keep ß) know better; ties keep "ss" ("masse", "dass").
    """
    from spellchecker import SpellChecker

    counts = SpellChecker(language="de", distance=1).word_frequency.dictionary
    spelled = []
    for word in words:
        pieces = word.split("ss")
        candidates = [
            "".join(piece + joint for piece, joint in zip(pieces, (*joints, "")))
            for joints in itertools.product(("ss", "ß"), repeat=len(pieces) - 1)
        ]
        spelled.append(max(candidates, key=lambda candidate: (counts.get(candidate, 0), candidate == word)))
    return spelled


@lru_cache(maxsize=4)
def vocabulary(language: str, size: int) -> tuple[tuple[str, ...], np.ndarray]:
    """The ``size`` most frequent wordfreq words spelled within the alphabet, and their probabilities.

    Words that normalization would change ("u.s"), that hold characters outside the
    alphabet (digits) or that are single letters other than real one-letter words are left
    out. German words get back their ß (:func:`_restore_eszett`).

    Returns:
        ``(words, probabilities)``, ``probabilities`` a read-only ``(size,)`` array summing to 1.
    """
    import wordfreq

    letters = set(Alphabet.for_language(language).chars) - {" "}
    single_letter_words = _SINGLE_LETTER_WORDS.get(language, frozenset())
    words: list[str] = []
    requested = 2 * size
    while len(words) < size:
        candidates = wordfreq.top_n_list(language, requested)
        words = [
            word
            for word in candidates
            if normalize(word) == word and set(word) <= letters and (len(word) > 1 or word in single_letter_words)
        ][:size]
        if len(candidates) < requested and len(words) < size:
            raise ValueError(
                f"wordfreq has only {len(words)} usable {language!r} words, fewer than vocabulary_size {size}"
            )
        requested *= 2
    frequencies = np.array([wordfreq.word_frequency(word, language) for word in words])
    probabilities = frequencies / frequencies.sum()
    probabilities.setflags(write=False)
    return tuple(_restore_eszett(words) if language == "de" else words), probabilities


def _text_file_sentences(config: SynthConfig) -> dict[str, list[tuple[str, int]]]:
    """Normalized ``(sentence, line number)`` pairs of ``text_file``, dealt out to the splits."""
    alphabet = Alphabet.for_language(config.language)
    sentences = []
    with open(config.text_file, encoding="utf-8") as lines:
        for line_number, line in enumerate(lines, start=1):
            sentence = normalize(line)
            if not sentence:
                continue
            unknown = alphabet.unknown_chars(sentence)
            if unknown:
                raise ValueError(
                    f"{config.text_file}:{line_number}: characters {sorted(unknown)} are outside the "
                    f"{config.language!r} alphabet; spell them out or remove the line"
                )
            sentences.append((sentence, line_number))
    order = np.random.default_rng([config.seed, len(SPLITS)]).permutation(len(sentences))
    total = sum(config.n_utterances.values())
    scale = min(1.0, len(sentences) / total) if total else 1.0
    portions, start = {}, 0
    for split in SPLITS:
        share = int(config.n_utterances[split] * scale)
        if config.n_utterances[split] and not share:
            raise ValueError(
                f"text_file {config.text_file} has {len(sentences)} sentences, too few to give every split its own"
            )
        portions[split] = [sentences[index] for index in order[start : start + share]]
        start += share
    return portions


def utterance_plans(config: SynthConfig) -> list[UtterancePlan]:
    portions = _text_file_sentences(config) if config.text_file else None
    plans = []
    for split in SPLITS:
        for index in range(config.n_utterances[split]):
            if portions is None:
                plans.append(UtterancePlan(split, index))
            else:
                sentence, line_number = portions[split][index % len(portions[split])]
                plans.append(UtterancePlan(split, index, sentence, line_number))
    return plans


def draw_text(plan: UtterancePlan, config: SynthConfig, vocabulary: tuple | None, rng: np.random.Generator) -> str:
    if plan.sentence is not None:
        return plan.sentence
    words, probabilities = vocabulary
    n_words = int(rng.integers(config.words_per_utterance[0], config.words_per_utterance[1] + 1))
    return " ".join(rng.choice(words, size=n_words, p=probabilities))

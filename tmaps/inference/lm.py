"""Word n-gram language models in ARPA format, estimated with interpolated Kneser–Ney.

No LM estimator installs here as a library: PyPI's ``kenlm`` builds from source and brings only
the query code (no ``lmplz``), ``kenlm-ex`` is the same query module as a wheel, and
``arpabo``'s "Kneser–Ney" writes every backoff weight as 1, so its distributions do not sum
to one. This module estimates interpolated Kneser–Ney (Chen & Goodman, 1998, one discount per
order, ``D = n1 / (n1 + 2 n2)``) and writes it in ARPA backoff form as KenLM's ``lmplz`` does:
lower orders use continuation counts (except n-grams that start with ``<s>``), the unigram
level is interpolated with the uniform distribution over the vocabulary (``<unk>`` included),
and a context's backoff weight is its interpolation weight.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

from tmaps.text import normalize

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
NGram = tuple[str, ...]


def read_sentences(path: str | os.PathLike) -> list[str]:
    """Normalized sentences of a text file (one a line) or of a manifest ``.jsonl`` (its ``text``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sentence file {path} does not exist")
    lines = path.read_text(encoding="utf-8").splitlines()
    if path.suffix == ".jsonl":
        try:
            texts = [json.loads(line)["text"] for line in lines if line.strip()]
        except (json.JSONDecodeError, KeyError) as error:
            raise ValueError(f"{path}: not a manifest of JSON lines with a 'text' key ({error!r})") from None
    else:
        texts = lines
    sentences = [sentence for sentence in (normalize(text) for text in texts) if sentence]
    if not sentences:
        raise ValueError(f"{path} holds no sentence")
    return sentences


def kneser_ney(sentences: Iterable[str], order: int = 3) -> tuple[list[dict[NGram, tuple[float, float | None]]], list[str]]:
    """Interpolated Kneser–Ney estimates of the n-grams of ``sentences`` (whitespace-separated words).

    Returns, per order ``k = 1..order``, ``{ngram: (log10 p(w | h), log10 backoff or None)}``
    (backoff only for n-grams that are contexts of a longer one), and the vocabulary.
    """
    if order < 1:
        raise ValueError(f"LM order must be >= 1, got {order}")
    counts: list[Counter[NGram]] = [Counter() for _ in range(order)]
    for sentence in sentences:
        words = [BOS, *sentence.split(), EOS]
        for k in range(1, order + 1):
            for start in range(len(words) - k + 1):
                ngram = tuple(words[start : start + k])
                if ngram != (BOS,):
                    counts[k - 1][ngram] += 1
    if not counts[0]:
        raise ValueError("no words to estimate an LM from")
    adjusted = _adjusted_counts(counts)
    vocabulary = sorted({word for (word,) in counts[0]} | {UNK})
    probabilities: list[dict[NGram, float]] = []
    interpolation: list[dict[NGram, float]] = []
    for k in range(1, order + 1):
        discount = _discount(adjusted[k - 1].values())
        totals: dict[NGram, float] = defaultdict(float)
        followers: Counter[NGram] = Counter()
        for ngram, count in adjusted[k - 1].items():
            totals[ngram[:-1]] += count
            followers[ngram[:-1]] += 1
        gammas = {context: discount * followers[context] / total for context, total in totals.items()}
        level = {}
        for ngram, count in adjusted[k - 1].items():
            lower = 1 / len(vocabulary) if k == 1 else _probability(ngram[1:], probabilities, interpolation)
            level[ngram] = max(count - discount, 0.0) / totals[ngram[:-1]] + gammas[ngram[:-1]] * lower
        if k == 1:
            level[(UNK,)] = gammas[()] / len(vocabulary)
        probabilities.append(level)
        interpolation.append(gammas)
    estimates = []
    for k, level in enumerate(probabilities, start=1):
        backoffs = interpolation[k] if k < order else {}
        entries = {ngram: (math.log10(p), _log10(backoffs[ngram]) if ngram in backoffs else None) for ngram, p in level.items()}
        if k == 1:
            entries[(BOS,)] = (-99.0, _log10(backoffs[(BOS,)]) if (BOS,) in backoffs else None)
        estimates.append(entries)
    return estimates, vocabulary


def _adjusted_counts(counts: Sequence[Counter[NGram]]) -> list[Counter[NGram]]:
    """Raw counts at the top order and for n-grams starting with ``<s>``; below, continuation
    counts (distinct words seen before the n-gram). Every other lower-order n-gram has a left
    extension, because only ``<s>`` begins a sentence."""
    adjusted = [Counter() for _ in counts]
    adjusted[-1] = Counter(counts[-1])
    for k in range(len(counts) - 1):
        for ngram, count in counts[k].items():
            if ngram[0] == BOS:
                adjusted[k][ngram] = count
        for longer in counts[k + 1]:
            adjusted[k][longer[1:]] += 1
    return adjusted


def _discount(counts: Iterable[float]) -> float:
    histogram = Counter(counts)
    n1, n2 = histogram[1], histogram[2]
    # Too few n-grams for the count-of-counts estimate (tiny texts): the usual middle value.
    return n1 / (n1 + 2 * n2) if n1 and n2 else 0.5


def _probability(ngram: NGram, probabilities: list[dict[NGram, float]], interpolation: list[dict[NGram, float]]) -> float:
    """p(w | h) of the levels estimated so far, backing off through unseen contexts."""
    k = len(ngram)
    if ngram in probabilities[k - 1]:
        return probabilities[k - 1][ngram]
    if k == 1:
        return probabilities[0][(UNK,)] if (UNK,) in probabilities[0] else 0.0
    return interpolation[k - 1].get(ngram[:-1], 1.0) * _probability(ngram[1:], probabilities, interpolation)


def _log10(value: float) -> float:
    return math.log10(value) if value > 0 else -99.0


def write_arpa(estimates: Sequence[dict[NGram, tuple[float, float | None]]], path: str | os.PathLike) -> Path:
    """Write the estimates of :func:`kneser_ney` as an ARPA file."""
    path = Path(path)
    lines = ["\\data\\", *(f"ngram {k}={len(level)}" for k, level in enumerate(estimates, start=1)), ""]
    for k, level in enumerate(estimates, start=1):
        lines.append(f"\\{k}-grams:")
        for ngram in sorted(level):
            log_probability, backoff = level[ngram]
            lines.append(f"{log_probability:.6f}\t{' '.join(ngram)}" + (f"\t{backoff:.6f}" if backoff is not None else ""))
        lines.append("")
    lines.append("\\end\\")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_kneser_ney_arpa(sentences: Iterable[str], path: str | os.PathLike, order: int = 3) -> Path:
    """Estimate an interpolated Kneser–Ney ``order``-gram LM from ``sentences`` and write it as ARPA."""
    estimates, _ = kneser_ney(sentences, order)
    return write_arpa(estimates, path)


def arpa_probability(estimates: Sequence[dict[NGram, tuple[float, float | None]]], context: Sequence[str], word: str) -> float:
    """``p(word | context)`` under ARPA backoff semantics (what a decoder reads from the file)."""
    history = tuple(context)[-(len(estimates) - 1) :] if len(estimates) > 1 else ()
    log_backoff = 0.0
    while True:
        ngram = (*history, word)
        if len(ngram) <= len(estimates) and ngram in estimates[len(ngram) - 1]:
            return 10 ** (estimates[len(ngram) - 1][ngram][0] + log_backoff)
        if not history:
            return 10 ** (estimates[0][(UNK,)][0] + log_backoff)
        entry = estimates[len(history) - 1].get(history)
        log_backoff += entry[1] if entry and entry[1] is not None else 0.0
        history = history[1:]

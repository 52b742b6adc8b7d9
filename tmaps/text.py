"""Alphabets, transcript normalization and CTC label handling.

Index 0 of every alphabet is the CTC blank; characters follow from index 1.

Digits are not spelled out. How a digit string is read ("1984" as a year or a count,
"3." as an ordinal in German) depends on context that a normalizer cannot see, so digits
count as characters outside the alphabet and follow the ``oov`` policy of the data config.
Spell numbers out in the transcripts (or drop those utterances) before training.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

BLANK = 0

_LATIN = "abcdefghijklmnopqrstuvwxyz"
ALPHABETS: dict[str, str] = {
    "en": " '" + _LATIN,
    "de": " '" + _LATIN + "äöüß",
}

_APOSTROPHES = str.maketrans({"’": "'", "‘": "'", "ʼ": "'", "`": "'", "´": "'"})
_DASHES = re.compile(r"[\-‐‑‒–—―/]")
_APOSTROPHE_OUTSIDE_WORD = re.compile(r"(?<![^\W\d_])'|'(?![^\W\d_])")
_WHITESPACE = re.compile(r"\s+")


def normalize(text: str) -> str:
    """NFC, lower-case, punctuation removed, whitespace collapsed.

    Dashes and slashes become spaces ("well-known" -> "well known"). An apostrophe
    survives only between letters ("don't", "geht's"); quote marks around words go.
    """
    text = unicodedata.normalize("NFC", text).translate(_APOSTROPHES).lower()
    text = _DASHES.sub(" ", text)
    text = "".join(
        ch if ch == "'" or not unicodedata.category(ch).startswith(("P", "S")) else " " for ch in text
    )
    text = _APOSTROPHE_OUTSIDE_WORD.sub(" ", text)
    return _WHITESPACE.sub(" ", text).strip()


@dataclass(frozen=True)
class Alphabet:
    """Characters of a CTC output layer; class ``i + 1`` is ``chars[i]``, class 0 the blank."""

    chars: str

    def __post_init__(self) -> None:
        if len(set(self.chars)) != len(self.chars):
            raise ValueError(f"alphabet has repeated characters: {self.chars!r}")

    @classmethod
    def for_language(cls, language: str) -> Alphabet:
        try:
            return cls(ALPHABETS[language])
        except KeyError:
            raise ValueError(f"no alphabet for language {language!r}; known: {sorted(ALPHABETS)}") from None

    @property
    def n_classes(self) -> int:
        return len(self.chars) + 1

    def __len__(self) -> int:
        return self.n_classes

    def index(self, char: str) -> int:
        return self.chars.index(char) + 1

    def unknown_chars(self, text: str) -> set[str]:
        return set(text) - set(self.chars)

    def encode(self, text: str) -> list[int]:
        """Class indices of a normalized text; raises ``ValueError`` naming unknown characters."""
        unknown = self.unknown_chars(text)
        if unknown:
            raise ValueError(f"characters {sorted(unknown)} of {text!r} are not in the alphabet {self.chars!r}")
        return [self.chars.index(ch) + 1 for ch in text]

    def decode(self, indices: Iterable[int]) -> str:
        """Text of class indices, blanks skipped (no CTC collapse)."""
        return "".join(self.chars[i - 1] for i in indices if i != BLANK)

    def decode_ctc(self, frame_indices: Sequence[int]) -> str:
        """Greedy CTC: collapse repeats, then drop blanks."""
        collapsed = [i for n, i in enumerate(frame_indices) if n == 0 or i != frame_indices[n - 1]]
        return self.decode(collapsed)

"""Broad phoneme classes of espeak-ng's ASCII phoneme mnemonics (English and German).

espeak-ng names phonemes with Kirshenbaum-like ASCII symbols: ``@`` (schwa), ``a#``, ``I2``
(variants of ``a`` and ``I``), ``3:`` (long), ``aI`` (diphthong), ``tS`` (affricate), ``D``,
``S``, ``C``, ``x`` (fricatives), ``N`` (velar nasal), ``_:`` (pause) ... A symbol's class
follows from its characters by rule, with a small table for the consonants:

- stress marks (``'``, ``,``, ``%``, ``=``) in front are ignored;
- pauses (``_``, ``_:``, ``_!``, ``_|`` ...) and markers that are not phonemes (language
  switches such as ``(de)``, the palatalization mark ``;``) are ``"silence"`` (silence/other);
- the modifiers ``:`` (long), ``#`` and a digit after the first character (variants), ``~``
  (nasalized) and ``-`` (syllabic) do not change the class;
- consonants and affricates come from the tables below; ``@L``/``@l`` (syllabic l) is an
  approximant, ``@n``/``@m`` (syllabic nasals) are nasals;
- a symbol made of vowel characters is a ``"vowel"`` when they name one quality (``aa``,
  ``3:``) and a ``"diphthong"`` when they name several (``aI``, ``e@``, ``aI@``, ``i@3``);
  vowels followed by a vocalized ``R``/``r`` (German ``UR``) are diphthongs as well. The
  exceptions are English ``A@``, ``O@`` and ``o@``, which espeak-ng realizes as the long
  monophthongs ɑː and ɔː (car, door, for): vowels.

A symbol that none of these rules covers raises ``ValueError`` naming it.
"""

from __future__ import annotations

PHONEME_CLASSES = ("vowel", "diphthong", "plosive", "affricate", "fricative", "nasal", "approximant", "silence")

_STRESS_MARKS = "',%="
_MODIFIERS = ":#~-"
# espeak-ng's own letters for the vowel qualities: 0 = open back rounded, 2 = close-mid front
# rounded, 3 = open-mid central (r-coloured in English), 6 = near-open central, 8 = close-mid
# central rounded, 9 and W = open-mid front rounded, @ = schwa, & = near-open front.
_VOWEL_LETTERS = set("aAeEiIoOuUVyY@&0236789W")
_CONSONANTS = {
    "affricate": {"tS", "dZ", "ts", "dz", "pf", "pF", "tz"},
    "plosive": {"p", "b", "t", "d", "k", "g", "c", "q", "?"},
    "fricative": {"f", "v", "T", "D", "s", "z", "S", "Z", "C", "x", "X", "h", "G", "B", "H"},
    "nasal": {"m", "n", "N", "n^", "@n", "@m"},
    "approximant": {"l", "r", "R", "w", "j", "L", "l^", "@L", "@l"},
}
_CLASS_OF_CONSONANT = {symbol: kind for kind, symbols in _CONSONANTS.items() for symbol in symbols}
_LONG_MONOPHTHONGS = {"A@", "O@", "o@"}


def phoneme_class(symbol: str) -> str:
    """Broad class (one of ``PHONEME_CLASSES``) of an espeak-ng phoneme mnemonic.

    Examples:
        >>> [phoneme_class(s) for s in ["@", "'aI", "tS", "D", "N", "l", "_:", "UR"]]
        ['vowel', 'diphthong', 'affricate', 'fricative', 'nasal', 'approximant', 'silence', 'diphthong']
    """
    bare = symbol.lstrip(_STRESS_MARKS)
    if not bare or bare.startswith("_") or bare == ";" or (bare.startswith("(") and bare.endswith(")")):
        return "silence"
    base = bare[0] + "".join(ch for ch in bare[1:] if not ch.isdigit())
    base = "".join(ch for ch in base if ch not in _MODIFIERS and ch != ";")
    if base in _CLASS_OF_CONSONANT:
        return _CLASS_OF_CONSONANT[base]
    if base in _LONG_MONOPHTHONGS:
        return "vowel"
    vowel_part = base[:-1] if len(base) > 1 and base[-1] in "Rr" else base
    if vowel_part and set(vowel_part) <= _VOWEL_LETTERS:
        return "diphthong" if len(set(vowel_part)) > 1 or vowel_part != base else "vowel"
    raise ValueError(f"unknown espeak phoneme symbol {symbol!r}: not a pause, consonant or vowel by the rules of tmaps.introspect.phonemes")

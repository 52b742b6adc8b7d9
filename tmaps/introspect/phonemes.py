"""Broad phoneme classes and IPA of espeak-ng's ASCII phoneme mnemonics (English and German).

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

A symbol that none of these rules covers raises ``ValueError`` naming it. :func:`ipa` gives a
mnemonic's IPA as espeak-ng writes it (:func:`ipa_label` keeps a pause's code), and :func:`phonetic_order`
orders map panels by class.
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


# IPA of espeak-ng's mnemonics as espeak-ng itself writes them (``espeak_TextToPhonemes`` in
# IPA mode, English and German voices; tests/test_phonemes.py checks this table against it).
_IPA = {
    "0": "ɒ", "3:": "ɜː", "@": "ə", "@-": "ə", "@L": "əl", "A": "ɑ", "A:": "ɑː", "A@": "ɑː", "A~": "ɑ̃",
    "C": "ç", "D": "ð", "E": "ɛ", "E2": "ɛ", "E:": "ɛː", "EI": "ɛɪ", "I": "ɪ", "I2": "ɪ", "N": "ŋ",
    "O": "ɔ", "O:": "ɔː", "O@": "ɔː", "OI": "ɔɪ", "OY": "ɔø", "O~": "ɔ̃", "R": "r", "S": "ʃ", "T": "θ",
    "U": "ʊ", "U@": "ʊə", "UR": "ʊɐ", "V": "ʌ", "W": "œ", "Y:": "øː", "Z": "ʒ", "a": "a", "a#": "ɐ",
    "aa": "a", "aI": "aɪ", "aI@": "aɪə", "aU": "aʊ", "b": "b", "d": "d", "dZ": "dʒ", "e": "e", "e:": "eː",
    "e@": "eə", "eI": "eɪ", "f": "f", "g": "ɡ", "h": "h", "i": "i", "i:": "iː", "i@": "iə", "i@3": "iə",
    "j": "j", "k": "k", "l": "l", "m": "m", "n": "n", "n-": "n̩", "o": "o", "o:": "oː", "o@": "ɔː",
    "oU": "əʊ", "p": "p", "pF": "pf", "r-": "ɹ", "s": "s", "t": "t", "tS": "tʃ", "ts": "ts", "u:": "uː",
    "v": "v", "w": "w", "x": "x", "y": "ʏ", "y:": "yː", "z": "z", ";": "ʲ",
}  # fmt: skip
# Where the two languages' tables give one mnemonic different sounds.
_IPA_BY_LANGUAGE = {"en": {"3": "ə", "r": "ɹ"}, "de": {"3": "ɜ", "r": "ɾ"}}


def ipa(symbol: str, language: str = "en") -> str:
    """The IPA of an espeak-ng phoneme mnemonic (stress marks ignored) as espeak-ng's ``language`` voice writes it.

    Examples:
        >>> [ipa(s) for s in ["D", "'aI", "tS", "3", "r"]], ipa("r", "de")
        (['ð', 'aɪ', 'tʃ', 'ə', 'ɹ'], 'ɾ')

    Raises:
        ValueError: the symbol is not in the table (it is named).
    """
    bare = symbol.lstrip(_STRESS_MARKS)
    found = _IPA_BY_LANGUAGE.get(language, {}).get(bare) or _IPA.get(bare)
    if found is None:
        raise ValueError(f"no IPA for the espeak phoneme symbol {symbol!r} ({language}) in tmaps.introspect.phonemes")
    return found


def ipa_label(symbol: str, language: str = "en") -> str:
    """A panel title for a phoneme mnemonic: its :func:`ipa`, or for a pause or marker that has none (``_:``) the mnemonic itself.

    Raises:
        ValueError: a phoneme (not a pause or marker) without IPA in the table.
    """
    try:
        return ipa(symbol, language)
    except ValueError:
        if phoneme_class(symbol) == "silence":
            return symbol
        raise


def phonetic_order(symbols: list[str], language: str = "en") -> list[int]:
    """Indices of ``symbols`` ordered by phonetic class (the order of ``PHONEME_CLASSES``), then by :func:`ipa_label`."""
    return sorted(range(len(symbols)), key=lambda index: (PHONEME_CLASSES.index(phoneme_class(symbols[index])), ipa_label(symbols[index], language)))

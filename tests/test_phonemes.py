"""IPA of espeak-ng's phoneme mnemonics, checked against what espeak-ng itself writes in IPA for real words."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest
from wordfreq import top_n_list

from tmaps.data.synth import Espeak
from tmaps.introspect import PHONEME_CLASSES, ipa, phoneme_class, phonetic_order


@pytest.mark.parametrize("language", ["en", "de"])
def test_ipa_table_agrees_with_espeaks_own_ipa_for_a_thousand_common_words(language):
    espeak = Espeak()
    written: dict[str, Counter] = defaultdict(Counter)
    for word in top_n_list(language, 500):
        mnemonics = [label.strip().lstrip("',%=") for label in espeak.transcribe(word, language)]
        sounds = [label.strip().lstrip("ˈˌ") for label in espeak.transcribe(word, language, ipa=True)]
        mnemonics = [label for label in mnemonics if label and not label.startswith(("_", "("))]
        sounds = [label for label in sounds if label and not label.startswith("(")]
        if len(mnemonics) == len(sounds):  # a few words' IPA merges or splits phonemes; those cannot be paired
            for mnemonic, sound in zip(mnemonics, sounds):
                if " " not in mnemonic:
                    written[mnemonic][sound] += 1
    assert len(written) > 30
    # A mnemonic may have allophones (German r as ɾ or r); the table holds the one espeak writes most.
    wrong = {mnemonic: dict(sounds) for mnemonic, sounds in written.items() if ipa(mnemonic, language) != sounds.most_common(1)[0][0]}
    assert not wrong, wrong


def test_unknown_mnemonic_is_named_and_panels_order_by_class():
    with pytest.raises(ValueError, match=r"no IPA for the espeak phoneme symbol 'Q7'"):
        ipa("Q7")
    symbols = ["s", "@", "n", "p", "aI", "l", "tS", "i:"]
    ordered = [symbols[index] for index in phonetic_order(symbols)]
    assert [phoneme_class(symbol) for symbol in ordered] == sorted(map(phoneme_class, symbols), key=PHONEME_CLASSES.index)
    assert ordered[:2] == ["i:", "@"]  # vowels first, then by IPA: iː before ə

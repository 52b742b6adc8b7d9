import pytest

from tmaps.text import BLANK, Alphabet, normalize


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Hello, World!", "hello world"),
        ("„Über die Brücke“, sagte sie.", "über die brücke sagte sie"),
        ("don't  'quote' me", "don't quote me"),
        ("Geht’s?  Well-known\tthings", "geht's well known things"),
        ("STRASSE Straße", "strasse straße"),
        ("e\u0301t\u00e9", "\u00e9t\u00e9"),  # NFC: decomposed é becomes one code point
    ],
)
def test_normalize(raw, expected):
    assert normalize(raw) == expected


def test_digits_are_kept_for_the_oov_policy_to_judge():
    text = normalize("Room 101.")
    assert text == "room 101"
    assert Alphabet.for_language("en").unknown_chars(text) == {"0", "1"}


def test_alphabets_put_blank_first_and_german_extends_english():
    en, de = Alphabet.for_language("en"), Alphabet.for_language("de")
    assert en.n_classes == 29 and de.n_classes == 33
    assert set(en.chars) < set(de.chars) and set(de.chars) - set(en.chars) == set("äöüß")
    assert BLANK == 0 and en.index(" ") >= 1


def test_encode_decode_round_trip_and_unknown_characters_are_named():
    de = Alphabet.for_language("de")
    assert de.decode(de.encode("grüße aus köln")) == "grüße aus köln"
    with pytest.raises(ValueError, match="'ß'"):
        Alphabet.for_language("en").encode("straße")
    with pytest.raises(ValueError, match="no alphabet for language 'fr'"):
        Alphabet.for_language("fr")


def test_ctc_collapse_keeps_doubled_letters_separated_by_blank():
    en = Alphabet.for_language("en")
    h, l_, o = en.index("h"), en.index("l"), en.index("o")
    frames = [BLANK, h, h, BLANK, l_, l_, BLANK, l_, o, o, BLANK]
    assert en.decode_ctc(frames) == "hllo"

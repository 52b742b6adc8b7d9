"""Error-mode analysis: outcomes of aligned characters, their groupings, tables and maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tmaps.data import SpeechDataModule
from tmaps.introspect import NAP, compute_layout
from tmaps.introspect.error_analysis import (
    DELETED,
    Outcome,
    character_outcomes,
    collect_outcomes,
    confusion_counts,
    outcome_groupings,
    outcome_table,
    plot_outcome_maps,
)
from tmaps.introspect.frames import FrameMap
from tmaps.models import Wav2Letter
from tmaps.text import BLANK, Alphabet

ENGLISH = Alphabet.for_language("en")
OUTPUT_MAP = FrameMap(stride=2, offset=0.0)


def peaked_log_probs(frames: list[str | None], avoid: dict[int, str] | None = None) -> torch.Tensor:
    """``(T', C)`` log-probabilities whose argmax at frame ``t`` is ``frames[t]`` (``None``: blank).

    ``avoid[t] = chars`` makes those characters very unlikely at frame ``t``, so that forced
    alignment places them elsewhere.
    """
    logits = torch.zeros(len(frames), ENGLISH.n_classes)
    for t, char in enumerate(frames):
        logits[t, BLANK if char is None else ENGLISH.index(char)] = 5.0
    for t, chars in (avoid or {}).items():
        logits[t, [ENGLISH.index(char) for char in chars]] = -20.0
    return logits.log_softmax(dim=-1)


def test_each_aligned_character_gets_what_greedy_decoding_emits_on_its_frames():
    # Greedy decoding reads "ab ac": the second b became c; the second word's a is on a blank frame.
    frames = ["a", None, "b", None, " ", None, None, "z", "c", None]
    log_probs = peaked_log_probs(frames, avoid={7: "ab", 9: "b"})
    log_probs[6, ENGLISH.index("a")] = log_probs[6, BLANK] - 0.5  # a is likely, yet not the argmax
    outcomes = character_outcomes(log_probs, "ab ab", ENGLISH, OUTPUT_MAP)
    assert [(o.target, o.predicted) for o in outcomes] == [("a", "a"), ("b", "b"), ("a", DELETED), ("b", "c")]
    # Frame m is centred at 2 m / 100 s and spans one frame: the second b sits on frame 8.
    assert outcomes[3].start_s == pytest.approx(0.15) and outcomes[3].end_s == pytest.approx(0.17)


def test_an_empty_transcript_has_no_outcomes():
    assert character_outcomes(peaked_log_probs([None, None]), "", ENGLISH, OUTPUT_MAP) == []


OUTCOMES = {
    "u1": [Outcome("a", "a", 0.0, 0.1), Outcome("b", "c", 0.1, 0.2), Outcome("a", DELETED, 0.3, 0.4)],
    "u2": [Outcome("a", "a", 0.0, 0.1), Outcome("b", "c", 0.2, 0.3), Outcome("c", "c", 0.4, 0.5)],
}


def test_confusions_count_pairs_and_their_share_of_the_target():
    table = confusion_counts(OUTCOMES)
    rows = {(row.target, row.predicted): (row.count, row.rate) for row in table.itertuples()}
    assert rows == {("a", "a"): (2, 2 / 3), ("b", "c"): (2, 1.0), ("a", DELETED): (1, 1 / 3), ("c", "c"): (1, 1.0)}
    assert table["count"].is_monotonic_decreasing


def test_the_outcome_table_gives_error_rates_and_top_confusions():
    table = outcome_table(OUTCOMES).set_index("character")
    assert table.loc["b", "error_rate"] == 1.0 and table.loc["b", "top_confusion"] == "b→c"
    assert table.loc["a", "errors"] == 1 and table.loc["a", "count"] == 3
    assert table.loc["c", "error_rate"] == 0.0 and table.loc["c", "top_confusion"] == ""
    assert list(table.index) == ["b", "a", "c"]


def test_groupings_label_segments_by_outcome_and_by_confusion():
    outcome, confusion = outcome_groupings(OUTCOMES)
    assert outcome.segments({"id": "u1"}) == [("a:correct", 0.0, 0.1), ("b:wrong", 0.1, 0.2), ("a:wrong", 0.3, 0.4)]
    assert confusion.segments({"id": "u2"}) == [("b→c", 0.2, 0.3)]
    with pytest.raises(ValueError, match="no entry for record 'u3'"):
        outcome.segments({"id": "u3"})


@pytest.fixture(scope="module")
def test_batches(synth_corpus_en, tmp_path_factory):
    data = SpeechDataModule(
        source={"kind": "manifest", "path": str(synth_corpus_en), "splits": {"test": "test.jsonl"}},
        root=str(tmp_path_factory.mktemp("cache")),
        batching={"max_batch_seconds": 20, "num_workers": 0},
    )
    data.prepare_data()
    return list(data.loader("test", shuffle=False))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return Wav2Letter(n_features=40, n_classes=ENGLISH.n_classes, channels=[32, 32, 48], kernel_sizes=[11, 7, 1], strides=[2, 1, 1])


def test_every_character_of_real_utterances_gets_an_outcome_inside_the_utterance(model, test_batches):
    by_record = collect_outcomes(model, test_batches, ENGLISH)
    records = [record for batch in test_batches for record in batch["records"]]
    assert sorted(by_record) == sorted(record["id"] for record in records)
    for record in records:
        outcomes = by_record[record["id"]]
        assert "".join(o.target for o in outcomes) == record["text"].replace(" ", "")
        starts = [o.start_s for o in outcomes]
        # Output frames (stride 2) span 20 ms around their centres; frame 0 starts 10 ms before the audio.
        assert starts == sorted(starts) and starts[0] >= -0.01 - 1e-9 and outcomes[-1].end_s <= record["duration"] + 0.03
        assert all(o.predicted in ENGLISH.chars or o.predicted == DELETED for o in outcomes)


def test_outcome_profiles_and_maps_of_correct_and_wrong_frames(model, test_batches):
    # A model that always emits "e" is right exactly on the e's.
    constant = Wav2Letter(n_features=40, n_classes=ENGLISH.n_classes, channels=[32, 32, 48], kernel_sizes=[11, 7, 1], strides=[2, 1, 1])
    with torch.no_grad():
        constant.head.weight.zero_()
        constant.head.bias.fill_(-10.0)
        constant.head.bias[ENGLISH.index("e")] = 10.0
    by_record = collect_outcomes(constant, test_batches, ENGLISH)
    every = [o for outcomes in by_record.values() for o in outcomes]
    assert all((o.predicted == "e") for o in every)
    # Relabel every other e as misread, so that "e" has correct and wrong frames.
    e_seen = iter(range(len(every)))
    relabelled = {
        record_id: [o._replace(predicted="a") if o.target == "e" and next(e_seen) % 2 else o for o in outcomes]
        for record_id, outcomes in by_record.items()
    }
    outcome, confusion = outcome_groupings(relabelled)
    profiles = NAP(model, ["conv1", "conv2"]).compute(test_batches, outcome)
    assert [g for g in profiles.groups if g.endswith(":correct")] == ["e:correct"]
    assert "e:wrong" in profiles.groups and "t:wrong" in profiles.groups
    table = outcome_table(relabelled, profiles, "conv2").set_index("character")
    assert table.loc["e", "error_rate"] == pytest.approx(table.loc["e", "errors"] / table.loc["e", "count"])
    assert 0.3 < table.loc["e", "error_rate"] < 0.7 and (table.drop(index="e")["error_rate"] == 1.0).all()
    assert 0 < table.loc["e", "profile_distance"] <= 2 and np.isnan(table.loc["t", "profile_distance"])
    assert "e→a" in NAP(model, ["conv2"]).compute(test_batches, confusion).groups
    coords = compute_layout("pca", profiles.matrix("conv2"))
    figure = plot_outcome_maps(coords, profiles, "conv2", ["e"])
    assert [text.get_text() for text in figure.axes[0].texts] == ["e correct", "e wrong", "e wrong − correct"]
    with pytest.raises(ValueError, match=r"characters \['t'\] lack correct or wrong frames"):
        plot_outcome_maps(coords, profiles, "conv2", ["t"])

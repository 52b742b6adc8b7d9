"""CTC decoders and the Kneser–Ney ARPA writer: normalized LMs, lexicon and LM corrections, configs."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_module
from test_introspect_cli import TINY_SYNTH, train_checkpoint

from tmaps.commands.eval import evaluate
from tmaps.inference.decoding import BeamSearchDecoder, GreedyDecoder, build_decoder
from tmaps.inference.lm import BOS, UNK, arpa_probability, kneser_ney, read_sentences, write_kneser_ney_arpa
from tmaps.text import Alphabet

ENGLISH = Alphabet.for_language("en")
SENTENCES = ["the cat sat on the mat", "the dog sat on the log", "a cat saw the dog", "the cat ran", "a dog ran on the mat"]


def emissions(frames: list[dict[str, float]]) -> torch.Tensor:
    """``(1, T, C)`` log-probabilities: each frame puts the given probabilities on characters
    (``""`` is the blank) and spreads the rest evenly."""
    rows = []
    for frame in frames:
        probabilities = torch.full((ENGLISH.n_classes,), (1 - sum(frame.values())) / (ENGLISH.n_classes - len(frame)))
        for char, probability in frame.items():
            probabilities[0 if char == "" else ENGLISH.index(char)] = probability
        rows.append(probabilities.log())
    return torch.stack(rows)[None]


def spell(text: str, confidence: float = 0.9) -> list[dict[str, float]]:
    """Frames that say ``text`` one character at a time, a blank after each."""
    return [frame for char in text for frame in ({char: confidence}, {"": confidence})]


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_kneser_ney_distributions_sum_to_one_in_every_context(order):
    estimates, vocabulary = kneser_ney(SENTENCES, order)
    contexts = [(), (BOS,), ("the",), ("the", "cat"), ("sat", "on", "the"), ("unseen",), (BOS, "a")]
    for context in contexts:
        total = sum(arpa_probability(estimates, context, word) for word in vocabulary)
        assert total == pytest.approx(1.0, abs=1e-9), context


def test_kneser_ney_prefers_seen_continuations_and_keeps_mass_for_unknown_words():
    estimates, _ = kneser_ney(SENTENCES, 3)
    assert arpa_probability(estimates, ("sat",), "on") > arpa_probability(estimates, ("sat",), "cat")
    assert arpa_probability(estimates, ("the", "cat"), "sat") > arpa_probability(estimates, ("the", "cat"), "mat")
    assert 0 < arpa_probability(estimates, ("the",), UNK) < arpa_probability(estimates, ("the",), "cat")
    # "francisco" is frequent but follows only "san"; "dog" is rarer but follows three words. After
    # an unseen context the continuation counts decide, not the raw counts.
    estimates, _ = kneser_ney(["san francisco"] * 10 + ["a dog", "the dog", "my dog"], 2)
    assert arpa_probability(estimates, ("big",), "dog") > arpa_probability(estimates, ("big",), "francisco")


def test_arpa_file_has_its_header_counts_and_levels(tmp_path):
    path = write_kneser_ney_arpa(SENTENCES, tmp_path / "lm.arpa", order=3)
    lines = path.read_text().splitlines()
    counts = {int(line.split()[1].split("=")[0]): int(line.split("=")[1]) for line in lines if line.startswith("ngram ")}
    assert sorted(counts) == [1, 2, 3]
    for order, count in counts.items():
        start = lines.index(f"\\{order}-grams:")
        assert len([line for line in lines[start + 1 : start + 1 + count] if line]) == count
    assert lines[-1] == "\\end\\"


def test_greedy_collapses_repeats_and_drops_blanks():
    frames = [{"c": 0.9}, {"c": 0.9}, {"": 0.9}, {"a": 0.9}, {"t": 0.9}, {"": 0.9}, {"t": 0.9}]
    assert GreedyDecoder(ENGLISH)(emissions(frames), torch.tensor([7])) == ["catt"]


def test_a_lexicon_turns_a_misheard_word_into_a_known_one(tmp_path):
    frames = spell("the ca", 0.9) + [{"d": 0.5, "t": 0.4}, {"": 0.9}]
    log_probs = emissions(frames)
    lengths = torch.tensor([log_probs.shape[1]])
    assert GreedyDecoder(ENGLISH)(log_probs, lengths) == ["the cad"]
    free = BeamSearchDecoder(ENGLISH, work_dir=tmp_path)
    assert free(log_probs, lengths) == ["the cad"]
    with_lexicon = BeamSearchDecoder(ENGLISH, lexicon=["the", "cat", "dog"], work_dir=tmp_path)
    assert with_lexicon(log_probs, lengths) == ["the cat"]


def test_the_lm_picks_the_word_the_acoustics_leave_open(tmp_path):
    frames = spell("the ", 0.9) + [{"c": 0.45, "m": 0.45}, {"": 0.9}] + spell("at sat", 0.9)
    log_probs = emissions(frames)
    lengths = torch.tensor([log_probs.shape[1]])
    lm = write_kneser_ney_arpa(["the cat sat", "the cat sat down", "a mat is flat"], tmp_path / "lm.arpa", order=3)
    lexicon = ["the", "cat", "mat", "sat", "a", "is", "flat", "down"]
    decoded = BeamSearchDecoder(ENGLISH, lexicon=lexicon, lm=lm, lm_weight=1.0, work_dir=tmp_path)(log_probs, lengths)
    assert decoded == ["the cat sat"]


def test_build_decoder_estimates_lexicon_and_lm_from_a_manifest(synth_corpus_en, tmp_path):
    decoder = build_decoder({"kind": "beam", "lm_order": 2}, ENGLISH, work_dir=tmp_path, train_text=synth_corpus_en / "train.jsonl")
    assert isinstance(decoder, BeamSearchDecoder)
    words = {word for sentence in read_sentences(synth_corpus_en / "train.jsonl") for word in sentence.split()}
    assert {line.split()[0] for line in (tmp_path / "lexicon.txt").read_text().splitlines()} == words
    assert (tmp_path / "lm.arpa").read_text().startswith("\\data\\")


@pytest.mark.parametrize(
    ("config", "message"),
    [({"kind": "viterbi"}, "decoder.kind must be one of"), ({"kind": "beam"}, "needs decoder.text")],
)
def test_bad_decoder_configs_say_what_is_wrong(config, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        build_decoder(config, ENGLISH, work_dir=tmp_path)


def test_read_sentences_names_a_file_without_sentences(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(ValueError, match=str(empty)):
        read_sentences(empty)


def test_eval_with_beam_search_scores_every_test_split(synth_corpus_en, synth_data_dir, tmp_path):
    checkpoint = train_checkpoint(synth_corpus_en, tmp_path / "model")
    with initialize_config_module(config_module="tmaps.conf", version_base="1.3"):
        cfg = compose(
            config_name="eval",
            overrides=[f"ckpt_path={checkpoint}", "decoder=beam", "decoder.lm_order=2", "decoder.beam_size=8", *TINY_SYNTH,
                       f"paths.output_dir={tmp_path / 'eval'}", f"paths.data_dir={synth_data_dir}", "trainer.enable_progress_bar=false"],
        )
    results = evaluate(cfg)
    assert set(results) == {"test", "test_unseen"}
    assert all(0 <= row["cer"] and 0 <= row["wer"] for row in results.values())
    assert (tmp_path / "eval" / "lm.arpa").is_file() and (tmp_path / "eval" / "lexicon.txt").is_file()

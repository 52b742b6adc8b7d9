"""CTC decoders: greedy, and beam search with a lexicon and an n-gram LM (flashlight-text).

Every decoder is called as ``decoder(log_probs (B, T', C), output_lengths (B,)) -> list[str]``,
the normalized transcripts of the batch. ``build_decoder(config, alphabet)`` makes one from the
``decoder`` config group.

Beam search uses torchaudio's ``ctc_decoder`` (flashlight-text, the ``decode`` extra). The
space character is the word separator (flashlight's silence token ``|``); with a lexicon, only
its words are hypothesized, spelled one character a token. The LM is an ARPA file, estimated
from text with :func:`tmaps.inference.lm.write_kneser_ney_arpa` unless one is given.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import Tensor

from tmaps.extras import require
from tmaps.inference.lm import read_sentences, write_kneser_ney_arpa
from tmaps.text import BLANK, Alphabet

log = logging.getLogger(__name__)

DECODERS = ("greedy", "beam")
BLANK_TOKEN = "<blank>"
WORD_SEPARATOR = "|"


class GreedyDecoder:
    """Best class per frame, repeats collapsed, blanks dropped."""

    def __init__(self, alphabet: Alphabet) -> None:
        self.alphabet = alphabet

    def __call__(self, log_probs: Tensor, output_lengths: Tensor) -> list[str]:
        best = log_probs.argmax(dim=-1).cpu()
        return [self.alphabet.decode_ctc(best[b, : int(n)].tolist()) for b, n in enumerate(output_lengths)]


class BeamSearchDecoder:
    """CTC beam search with an optional lexicon and an optional ARPA n-gram LM.

    Args:
        alphabet: the model's output classes.
        lexicon: words the decoder may output (``None``: any character sequence).
        lm: path of an ARPA (or KenLM binary) word LM, or ``None``.
        beam_size: hypotheses kept per frame.
        lm_weight: weight of the LM log-probability.
        word_score: added per word (positive values favour more words).
        beam_threshold: hypotheses this far below the best are pruned.
        work_dir: where the token and lexicon files for flashlight are written.
    """

    def __init__(
        self,
        alphabet: Alphabet,
        lexicon: Iterable[str] | None = None,
        lm: str | os.PathLike | None = None,
        beam_size: int = 50,
        lm_weight: float = 1.0,
        word_score: float = 0.0,
        beam_threshold: float = 25.0,
        work_dir: str | os.PathLike = ".",
    ) -> None:
        require("flashlight.lib.text", extra="decode", feature="beam search decoding (decoder=beam)")
        from torchaudio.models.decoder import ctc_decoder

        self.alphabet = alphabet
        tokens = [BLANK_TOKEN, *(WORD_SEPARATOR if char == " " else char for char in alphabet.chars)]
        lexicon_path = None
        if lexicon is not None:
            lexicon_path = Path(work_dir) / "lexicon.txt"
            write_lexicon(lexicon, alphabet, lexicon_path)
        self._decoder = ctc_decoder(
            lexicon=str(lexicon_path) if lexicon_path else None,
            tokens=tokens,
            lm=str(lm) if lm else None,
            beam_size=beam_size,
            lm_weight=lm_weight if lm else 0.0,
            word_score=word_score,
            beam_threshold=beam_threshold,
            blank_token=BLANK_TOKEN,
            sil_token=WORD_SEPARATOR,
        )

    def __call__(self, log_probs: Tensor, output_lengths: Tensor) -> list[str]:
        emissions = log_probs.detach().float().cpu().contiguous()
        results = self._decoder(emissions, output_lengths.cpu().to(torch.int32))
        return [" ".join(self._words(hypotheses[0])) if hypotheses else "" for hypotheses in results]

    def _words(self, hypothesis) -> list[str]:
        if hypothesis.words:
            return list(hypothesis.words)
        # Lexicon-free decoding has no words: spell them from the tokens.
        text = self.alphabet.decode(int(token) for token in hypothesis.tokens if int(token) != BLANK)
        return text.split()


def write_lexicon(words: Iterable[str], alphabet: Alphabet, path: str | os.PathLike) -> int:
    """Write flashlight's lexicon (``word w o r d |`` per line); return the number of words.

    Words with characters outside ``alphabet`` are left out with a warning naming them.
    """
    vocabulary = sorted({word for word in words if word})
    spellable = [word for word in vocabulary if not alphabet.unknown_chars(word) and " " not in word]
    skipped = sorted(set(vocabulary) - set(spellable))
    if skipped:
        log.warning("lexicon: %d word(s) with characters outside the alphabet left out: %s", len(skipped), skipped[:20])
    if not spellable:
        raise ValueError(f"lexicon {path}: no word can be spelled with the alphabet {alphabet.chars!r}")
    Path(path).write_text("".join(f"{word} {' '.join(word)} {WORD_SEPARATOR}\n" for word in spellable), encoding="utf-8")
    return len(spellable)


def build_decoder(config: Mapping | None, alphabet: Alphabet, work_dir: str | os.PathLike, train_text: str | os.PathLike | None = None):
    """The decoder of a ``decoder`` config group.

    ``config["kind"]`` is ``greedy`` or ``beam``. For ``beam``: ``text`` (a text file of
    sentences or a manifest ``.jsonl``; defaults to ``train_text``, the corpus' train manifest
    where there is one) gives the lexicon (``lexicon: true``) and, with ``lm_order > 0``, a
    Kneser–Ney LM written to ``work_dir/lm.arpa``; ``lm`` names an existing ARPA file instead.
    ``beam_size``, ``lm_weight``, ``word_score`` and ``beam_threshold`` go to the beam search.
    """
    config = dict(config or {"kind": "greedy"})
    kind = config.get("kind", "greedy")
    if kind not in DECODERS:
        raise ValueError(f"decoder.kind must be one of {DECODERS}, got {kind!r}")
    if kind == "greedy":
        return GreedyDecoder(alphabet)
    text = config.get("text") or train_text
    needs_text = config.get("lexicon", True) or (config.get("lm_order", 0) and not config.get("lm"))
    if needs_text and not text:
        raise ValueError("decoder=beam with a lexicon or an LM to estimate needs decoder.text=<sentences .txt or manifest .jsonl>")
    sentences = read_sentences(text) if needs_text else []
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    lm = config.get("lm")
    if not lm and config.get("lm_order", 0):
        lm = work_dir / "lm.arpa"
        write_kneser_ney_arpa(sentences, lm, order=int(config["lm_order"]))
        log.info("estimated a %d-gram Kneser-Ney LM from %s into %s", config["lm_order"], text, lm)
    return BeamSearchDecoder(
        alphabet,
        lexicon=[word for sentence in sentences for word in sentence.split()] if config.get("lexicon", True) else None,
        lm=lm,
        beam_size=int(config.get("beam_size", 50)),
        lm_weight=float(config.get("lm_weight", 1.0)),
        word_score=float(config.get("word_score", 0.0)),
        beam_threshold=float(config.get("beam_threshold", 25.0)),
        work_dir=work_dir,
    )

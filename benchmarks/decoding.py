"""Greedy against beam search with a lexicon, and with a lexicon and an n-gram LM: WER, CER and speed.

The acoustic model runs once per split (its log-probabilities are kept); each decoder then
decodes them, timed alone, on one thread. The lexicon and the Kneser–Ney LM come from the
train transcripts of the corpus; the LM weight is chosen on the dev split among
``--lm-weights`` (never on a test split).

    python benchmarks/decoding.py --checkpoint logs/quickstart/runs/<date>/checkpoints/last.ckpt \
        --corpus data/synth-en-<hash> [--lm-order 3] [--beam-size 50]

The corpus folder holds train.jsonl, dev.jsonl, test.jsonl and test_unseen.jsonl (the
quickstart's is data/synth-en-<hash>). Prints a table and, on the last line, test WER of
greedy against beam + lexicon + LM.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torchmetrics.functional.text import char_error_rate, word_error_rate

from tmaps.checkpoint import load_checkpoint
from tmaps.data import SpeechDataModule
from tmaps.inference.decoding import build_decoder

SPLITS = ("dev", "test", "test_unseen")


def model_outputs(checkpoint_path: Path, corpus: Path, cache: Path) -> dict[str, tuple[list, list[str]]]:
    """Per split: the batches' ``(log_probs, output_lengths)`` and the reference transcripts."""
    checkpoint = load_checkpoint(checkpoint_path)
    data = SpeechDataModule(
        source={"kind": "manifest", "path": str(corpus), "splits": {split: f"{split}.jsonl" for split in ("train", *SPLITS)}},
        root=str(cache),
        features=checkpoint.features,
        batching={"num_workers": 0, "max_batch_seconds": 60},
    )
    data.prepare_data()
    outputs = {}
    with torch.no_grad():
        for split in SPLITS:
            batches, references = [], []
            for batch in data.loader(split):
                batches.append(checkpoint.model(batch["features"], batch["feature_lengths"]))
                references += [record["text"] for record in batch["records"]]
            outputs[split] = (batches, references)
    return outputs, checkpoint.alphabet


def decode(decoder, batches) -> tuple[list[str], float]:
    started = time.perf_counter()
    hypotheses = [text for log_probs, lengths in batches for text in decoder(log_probs, lengths)]
    return hypotheses, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--lm-order", type=int, default=3)
    parser.add_argument("--lm-weights", type=float, nargs="+", default=[0.25, 0.5, 1.0, 2.0])
    parser.add_argument("--beam-size", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="tmaps-decoding-"))
    outputs, alphabet = model_outputs(args.checkpoint, args.corpus, work / "cache")
    train_text = args.corpus / "train.jsonl"
    beam = {"kind": "beam", "beam_size": args.beam_size}

    def lm_decoder(weight: float):
        return build_decoder({**beam, "lm_order": args.lm_order, "lm_weight": weight}, alphabet, work / "lm", train_text)

    dev_batches, dev_references = outputs["dev"]
    dev_wer = {weight: float(word_error_rate(decode(lm_decoder(weight), dev_batches)[0], dev_references)) for weight in args.lm_weights}
    best_weight = min(dev_wer, key=dev_wer.get)
    print("dev WER by LM weight: " + ", ".join(f"{weight:g}: {wer:.4f}" for weight, wer in dev_wer.items()))
    decoders = {
        "greedy": build_decoder({"kind": "greedy"}, alphabet, work),
        "beam + lexicon": build_decoder({**beam, "lm_order": 0}, alphabet, work / "lexicon", train_text),
        f"beam + lexicon + {args.lm_order}-gram LM (weight {best_weight:g})": lm_decoder(best_weight),
    }
    rows = {}
    print("\n| decoder | split | utterances | WER | CER | utterances/s |\n|---|---|---|---|---|---|")
    for name, decoder in decoders.items():
        for split in ("test", "test_unseen"):
            batches, references = outputs[split]
            hypotheses, seconds = decode(decoder, batches)
            wer, cer = float(word_error_rate(hypotheses, references)), float(char_error_rate(hypotheses, references))
            rows[name, split] = wer
            print(f"| {name} | {split} | {len(references)} | {wer:.4f} | {cer:.4f} | {len(references) / seconds:,.0f} |")
    lm_name = list(decoders)[-1]
    print(
        f"test WER greedy {rows['greedy', 'test']:.4f} -> beam+lexicon+LM {rows[lm_name, 'test']:.4f}; "
        f"test_unseen {rows['greedy', 'test_unseen']:.4f} -> {rows[lm_name, 'test_unseen']:.4f}"
    )


if __name__ == "__main__":
    main()

"""Does a transcript depend on its batch? Each test utterance decoded alone against inside its test batch.

    python benchmarks/padding_invariance.py CHECKPOINT [Hydra overrides of the training run's data]

Composes the training config (``experiment=quickstart`` unless overrides say otherwise),
reads its test split with the checkpoint's features and batches it as ``tmaps-eval`` does
(the duration-bucketed batches of ``data.batching``), then, in eval mode and fp32, compares
every utterance's log-probabilities inside its padded batch with those of the utterance run
alone, over its valid frames. Prints the test CER both ways, the number of greedy transcripts
that change, and last the largest |delta log p| against the target (<= 1e-4, no transcript
changed).

The quickstart's corpus must exist (run the quickstart first, with the same ``paths.root_dir``
or ``TMAPS_DATA_DIR``); the composition only reads configs, it trains nothing.
"""

from __future__ import annotations

import sys
import time

import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from torchmetrics.text import CharErrorRate

from tmaps.checkpoint import load_checkpoint
from tmaps.data import checkpoint_datamodule

TARGET = 1e-4


def main(checkpoint_path: str, overrides: list[str]) -> None:
    loaded = load_checkpoint(checkpoint_path)
    model = loaded.model.float().eval()
    with initialize_config_module(config_module="tmaps.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=["experiment=quickstart", *overrides])
    data = OmegaConf.to_container(cfg.data, resolve=True)
    datamodule = checkpoint_datamodule(data, loaded.alphabet, loaded.features, checkpoint_path)
    datamodule.prepare_data()
    datamodule.setup("test")

    def transcript(log_probs: torch.Tensor) -> str:
        return loaded.alphabet.decode_ctc(log_probs.argmax(-1).tolist())

    largest, changed, n_utterances = 0.0, [], 0
    batched_cer, alone_cer = CharErrorRate(), CharErrorRate()
    started = time.perf_counter()
    with torch.no_grad():
        for batch in datamodule.loader("test"):
            log_probs, output_lengths = model(batch["features"], batch["feature_lengths"])
            for b, (record, length) in enumerate(zip(batch["records"], batch["feature_lengths"].tolist())):
                alone, (n_frames,) = model(batch["features"][b : b + 1, :, :length], batch["feature_lengths"][b : b + 1])
                inside = log_probs[b, : int(output_lengths[b])]
                largest = max(largest, float((inside - alone[0, :n_frames]).abs().max()))
                batched_text, alone_text = transcript(inside), transcript(alone[0, :n_frames])
                batched_cer.update([batched_text], [record["text"]])
                alone_cer.update([alone_text], [record["text"]])
                n_utterances += 1
                if batched_text != alone_text:
                    changed.append((record["id"], batched_text, alone_text))
    for utterance, batched_text, alone_text in changed[:10]:
        print(f"  {utterance}: batched {batched_text!r}\n  {' ' * len(utterance)}  alone   {alone_text!r}")
    print(f"{n_utterances} test utterances in {time.perf_counter() - started:.0f} s")
    print(f"test CER batched {float(batched_cer.compute()):.4f}, alone {float(alone_cer.compute()):.4f}")
    print(f"transcripts changed alone vs batched: {len(changed)} of {n_utterances} (target 0)")
    print(f"padding invariance: max |delta log p| alone vs batched {largest:.3g} (target <= {TARGET:g}), {len(changed)} transcripts changed")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])

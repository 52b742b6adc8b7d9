"""DataLoader throughput against training speed: the loader must never be the bottleneck.

Loader: batches/s of ``SpeechDataModule.train_dataloader()`` (2 workers, log-mel and
SpecAugment in the workers, duration buckets of ``max_batch_seconds``) over a synthetic
English corpus, timed over a second epoch so that worker start-up is not counted.
Training: steps/s of the small Wav2Letter (forward, CTC, backward, AdamW) on the same batches,
held in memory, after one warm-up step. Target: loader batches/s >= 3 x training steps/s.

    python benchmarks/dataloader.py [--utterances 240] [--steps 10] [--data-dir DIR]

The synthetic corpus is cached in ``--data-dir`` (a temporary folder by default). The last
line is the ratio.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from tmaps.data import SpeechDataModule
from tmaps.models import Wav2Letter
from tmaps.text import BLANK

CONFIG = Path(__file__).resolve().parents[1] / "conf" / "data" / "synth_en.yaml"
SMALL_MODEL = {"channels": [256, 256, 256, 256, 256, 512], "kernel_sizes": [11, 7, 7, 7, 7, 1], "strides": [2, 1, 1, 1, 1, 1], "norm": "batch"}


def build_datamodule(data_dir: Path, utterances: int) -> SpeechDataModule:
    config = OmegaConf.load(CONFIG)
    config.root = str(data_dir)
    config.source.n_utterances = {"train": utterances, "dev": 4, "test": 4, "test_unseen": 4}
    config.batching.num_workers = 2
    return SpeechDataModule(**OmegaConf.to_container(config, resolve=True))


def loader_batches_per_second(datamodule: SpeechDataModule) -> tuple[float, list[dict]]:
    loader = datamodule.train_dataloader()
    batches = list(loader)  # starts the persistent workers
    started = time.perf_counter()
    count = sum(1 for _ in loader)
    return count / (time.perf_counter() - started), batches


def training_steps_per_second(datamodule: SpeechDataModule, batches: list[dict], steps: int) -> float:
    model = Wav2Letter(n_features=datamodule.feature_config["n_mels"], n_classes=datamodule.alphabet.n_classes, **SMALL_MODEL)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ctc = torch.nn.CTCLoss(blank=BLANK, zero_infinity=True)

    def step(batch: dict) -> None:
        log_probs, output_lengths = model(batch["features"], batch["feature_lengths"])
        loss = ctc(log_probs.transpose(0, 1), batch["targets"], output_lengths, batch["target_lengths"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step(batches[0])
    timed = [batches[i % len(batches)] for i in range(1, steps + 1)]
    started = time.perf_counter()
    for batch in timed:
        step(batch)
    return steps / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=240, help="train utterances to synthesize")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps")
    parser.add_argument("--data-dir", type=Path, default=None, help="cache folder for the synthetic corpus")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tmaps-dataloader-") as temporary:
        datamodule = build_datamodule(arguments.data_dir or Path(temporary), arguments.utterances)
        datamodule.output_stride = 2
        datamodule.prepare_data()
        datamodule.setup("fit")
        loader_rate, batches = loader_batches_per_second(datamodule)
        seconds = sum(record["duration"] for batch in batches for record in batch["records"]) / len(batches)
        print(f"train loader: {len(batches)} batches of {seconds:.0f} s audio on average, {loader_rate:.2f} batches/s (2 workers)")
        training_rate = training_steps_per_second(datamodule, batches, arguments.steps)
        print(f"small Wav2Letter: {training_rate:.2f} training steps/s ({torch.get_num_threads()} threads)")
    print(f"loader batches/s / training steps/s = {loader_rate / training_rate:.1f} (target >= 3)")


if __name__ == "__main__":
    main()

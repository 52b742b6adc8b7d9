"""Training-step time with each topographic loss against none, on the paper-size Wav2Letter.

One step is forward + CTC + topographic loss + backward + AdamW step on a batch of 8
utterances of 10 s (1000 feature frames, 128 mel bands). Configurations are measured
interleaved (one step of each per round, after a warm-up round) and summarised by their
median; each is reported as the ratio to the step without a topographic loss.
Targets: <= 1.05 for the weight losses, <= 1.15 for the response loss.

    python benchmarks/topo_overhead.py [--rounds 5] [--batch-size 8] [--frames 1000]

The last line is the summary: the largest ratio of the weight losses and the response loss.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from tmaps.models import Wav2Letter
from tmaps.topo import build_regularizer

LAYERS_250 = [f"conv{i}" for i in range(1, 8)]
LAYER_2000 = "conv8"  # 250 -> 2000 channels, kernel 32: the largest weight (2000 x 8000)
CONFIGS = {
    "none": None,
    "weight_similarity conv1-7": {"layers": LAYERS_250, "loss": "weight_similarity"},
    "weight_similarity conv8": {"layers": [LAYER_2000], "loss": "weight_similarity"},
    "blur_smoothness conv1-7": {"layers": LAYERS_250, "loss": "blur_smoothness"},
    "blur_smoothness conv8": {"layers": [LAYER_2000], "loss": "blur_smoothness"},
    "response_correlation conv1-7": {"layers": LAYERS_250, "loss": "response_correlation"},
}
CHARACTERS_PER_SECOND = 15


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed steps per configuration")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--frames", type=int, default=1000, help="feature frames per utterance (100 per second)")
    arguments = parser.parse_args()

    torch.manual_seed(0)
    model = Wav2Letter(n_features=128, n_classes=29)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ctc = nn.CTCLoss(zero_infinity=True)
    features = torch.randn(arguments.batch_size, 128, arguments.frames)
    feature_lengths = torch.full((arguments.batch_size,), arguments.frames)
    n_characters = arguments.frames // 100 * CHARACTERS_PER_SECOND
    targets = torch.randint(1, 29, (arguments.batch_size, n_characters))
    target_lengths = torch.full((arguments.batch_size,), n_characters)
    regularizers = {name: build_regularizer(model, config) for name, config in CONFIGS.items()}

    def step_seconds(name: str) -> float:
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        log_probs, output_lengths = model(features, feature_lengths)
        loss = ctc(log_probs.transpose(0, 1), targets, output_lengths, target_lengths)
        if regularizers[name] is not None:
            loss = loss + regularizers[name].loss(step=0)[0]
        loss.backward()
        optimizer.step()
        return time.perf_counter() - start

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {arguments.batch_size} x {arguments.frames} frames")
    for name in CONFIGS:
        step_seconds(name)
    times: dict[str, list[float]] = {name: [] for name in CONFIGS}
    for _ in range(arguments.rounds):
        for name in CONFIGS:
            times[name].append(step_seconds(name))
    baseline = statistics.median(times["none"])
    ratios = {name: statistics.median(seconds) / baseline for name, seconds in times.items()}
    for name, seconds in times.items():
        print(f"{name:32s} median {statistics.median(seconds):7.3f} s  ratio {ratios[name]:.3f}  (min {min(seconds):.3f} s)")
    weight_ratio = max(ratio for name, ratio in ratios.items() if name.startswith(("weight", "blur")))
    print(
        f"topo overhead: weight losses <= {weight_ratio:.3f}x (target 1.05), "
        f"response loss {ratios['response_correlation conv1-7']:.3f}x (target 1.15) of a {baseline:.2f} s step"
    )


if __name__ == "__main__":
    main()

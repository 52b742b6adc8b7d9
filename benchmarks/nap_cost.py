"""Cost of streamed profiles: a NAP pass against plain inference, a GradNAP pass against forward + backward.

Over the same batches held in memory (a synthetic English corpus through ``SpeechDataModule``,
12 s of speech per batch, small Wav2Letter in eval mode), best of ``--repeats`` interleaved
timings of

- plain inference (``no_grad`` forward) vs ``NAP(...).compute(batches, "phoneme")`` over
  three layers (target: <= 1.2 x);
- forward + CTC loss + ``backward`` vs ``GradNAP(...)`` on the same layers (target: <= 1.3 x);

the same over the data four times in one pass, which pays the one-time costs of a pass (the
time-axis probe and the padding check on the first batch, see ``NAP``) once over four times the
frames, so that the steady per-batch overhead shows; and the peak resident memory (psutil, sampled every millisecond) of a NAP pass over the batches
once and ten times over: profiles are sums, so the peak must stay flat.

    python benchmarks/nap_cost.py [--utterances 48] [--repeats 3] [--data-dir DIR]

The synthetic corpus is cached in ``--data-dir`` (a temporary folder by default). The last line
sums up the three figures.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from omegaconf import OmegaConf

from tmaps.data import SpeechDataModule
from tmaps.extras import require
from tmaps.introspect.nap import NAP, GradNAP
from tmaps.models import Wav2Letter
from tmaps.text import BLANK

psutil = require("psutil", extra="bench", feature="benchmarks/nap_cost.py")
CONFIG = Path(__file__).resolve().parents[1] / "conf" / "data" / "synth_en.yaml"
SMALL_MODEL = {"channels": [256, 256, 256, 256, 256, 512], "kernel_sizes": [11, 7, 7, 7, 7, 1], "strides": [2, 1, 1, 1, 1, 1]}
LAYERS = ["conv1", "conv3", "conv5"]


def load_batches(data_dir: Path, utterances: int) -> tuple[list[dict], int]:
    config = OmegaConf.load(CONFIG)
    config.root = str(data_dir)
    config.source.n_utterances = {"train": utterances, "dev": 4, "test": 4, "test_unseen": 4}
    config.batching.num_workers = 0
    config.batching.max_batch_seconds = 12.0
    datamodule = SpeechDataModule(**OmegaConf.to_container(config, resolve=True))
    datamodule.prepare_data()
    return list(datamodule.loader("train", shuffle=False)), datamodule.alphabet.n_classes


def best_times(runs: list[Callable[[], object]], repeats: int) -> list[float]:
    """Best wall time of each run; the runs take turns so that load from elsewhere hits all alike."""
    best = [float("inf")] * len(runs)
    for _ in range(repeats):
        for i, run in enumerate(runs):
            started = time.perf_counter()
            run()
            best[i] = min(best[i], time.perf_counter() - started)
    return best


def peak_rss(run: Callable[[], object]) -> int:
    """Highest resident set size in bytes while ``run`` runs."""
    process, peak, done = psutil.Process(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        run()
    finally:
        done.set()
        sampler.join()
    return peak[0]


def repeated(batches: list[dict], times: int) -> Iterable[dict]:
    return (batch for _ in range(times) for batch in batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        batches, n_classes = load_batches(args.data_dir or Path(scratch), args.utterances)
    torch.manual_seed(0)
    model = Wav2Letter(n_features=batches[0]["features"].shape[1], n_classes=n_classes, **SMALL_MODEL).eval()
    ctc = torch.nn.CTCLoss(blank=BLANK, zero_infinity=True)
    print(f"{len(batches)} batches, {sum(len(b['records']) for b in batches)} utterances, layers {LAYERS}, {torch.get_num_threads()} threads")

    def inference() -> None:
        with torch.no_grad():
            for batch in batches:
                model(batch["features"], batch["feature_lengths"])

    def forward_backward() -> None:
        for batch in batches:
            log_probs, output_lengths = model(batch["features"], batch["feature_lengths"])
            ctc(log_probs.transpose(0, 1), batch["targets"], output_lengths, batch["target_lengths"]).backward()
        model.zero_grad()

    inference_s, nap_s, backward_s, gradnap_s = best_times(
        [
            inference,
            lambda: NAP(model, LAYERS).compute(batches, "phoneme"),
            forward_backward,
            lambda: GradNAP(model, LAYERS).compute(batches, "phoneme"),
        ],
        args.repeats,
    )
    print(f"inference {inference_s:.3f} s, NAP {nap_s:.3f} s: {nap_s / inference_s:.2f} x (target <= 1.2)")
    print(f"forward + backward {backward_s:.3f} s, GradNAP {gradnap_s:.3f} s: {gradnap_s / backward_s:.2f} x (target <= 1.3)")
    inference_4_s, nap_4_s = best_times(
        [
            lambda: [inference() for _ in range(4)],
            lambda: NAP(model, LAYERS).compute(repeated(batches, 4), "phoneme"),
        ],
        args.repeats,
    )
    one_time_s = nap_s - (nap_4_s - nap_s) / 3
    steady = (nap_4_s - nap_s) / (inference_4_s - inference_s)
    print(
        f"the data 4 times in one pass: inference {inference_4_s:.3f} s, NAP {nap_4_s:.3f} s: {nap_4_s / inference_4_s:.2f} x; "
        f"per extra pass over the data {steady:.2f} x; one-time cost of a pass {one_time_s * 1000:.0f} ms"
    )
    once = peak_rss(lambda: NAP(model, LAYERS).compute(repeated(batches, 1), "phoneme"))
    tenfold = peak_rss(lambda: NAP(model, LAYERS).compute(repeated(batches, 10), "phoneme"))
    growth = tenfold / once - 1
    print(f"peak RSS over the data once {once / 2**20:.0f} MiB, ten times {tenfold / 2**20:.0f} MiB ({growth:+.1%})")
    print(
        f"nap_cost: NAP {nap_s / inference_s:.2f}x inference ({nap_4_s / inference_4_s:.2f}x over 4x the data), "
        f"GradNAP {gradnap_s / backward_s:.2f}x forward+backward, "
        f"peak memory 10x data {growth:+.1%} vs 1x"
    )


if __name__ == "__main__":
    main()

"""What padding masks cost a training step: the small model on a padded batch against the same batch unpadded.

One step is forward, CTC, backward and AdamW (``mfu.train_step``) of the ``model=small``
Wav2Letter (conf/model/small.yaml, 40 mel bands) on ``--batch`` utterances of up to
``--frames`` feature frames. Masked: lengths spread evenly from 60% to 100% of the frames, so
every block zeroes padded frames and normalizes with the statistics of the valid frames
(``tmaps.models.masked_batchnorm``). Unmasked: the same features with every length full, where
no block masks anything and the stock BatchNorm runs, as before padding masks. Both take turns
``--repeats`` times (order alternating, after a warm-up step each); each figure is the median
of the per-turn step times, by wall clock and by this process's CPU time (steadier than the wall
clock on a machine that other jobs load). Target ratio <= 1.05.

    python benchmarks/masked_step.py [--batch 8] [--frames 300] [--repeats 7] [--precision 32-true] [--record]

The last line gives the ratios. ``--record`` also writes the step times and ratios to
``docs/results/benchmarks/masked_step-<precision>.json`` (``records.py``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import yaml
from mfu import train_step
from records import add_record_option, write_record

import tmaps.conf
from tmaps.models import build_model
from tmaps.text import Alphabet

N_MELS = 40


def small_model(n_classes: int) -> torch.nn.Module:
    config = yaml.safe_load((Path(tmaps.conf.__file__).parent / "model" / "small.yaml").read_text())
    return build_model({**config, "n_features": N_MELS, "n_classes": n_classes})


def timed_step(step) -> tuple[float, float]:
    """Wall-clock and CPU seconds of ``step()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    step()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8, help="utterances per batch")
    parser.add_argument("--frames", type=int, default=300, help="feature frames of the longest utterance (100 a second)")
    parser.add_argument("--repeats", type=int, default=7, help="timed steps of each kind")
    parser.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed"])
    add_record_option(parser)
    args = parser.parse_args()

    torch.manual_seed(0)
    n_classes = Alphabet.for_language("en").n_classes
    model = small_model(n_classes).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    features = torch.randn(args.batch, N_MELS, args.frames)
    target_length = args.frames // 20  # 5 characters a second, well under the output frames of the shortest utterance
    common = {"targets": torch.randint(1, n_classes, (args.batch, target_length)), "target_lengths": torch.full((args.batch,), target_length)}
    padded_lengths = torch.linspace(0.6 * args.frames, args.frames, args.batch).round().long()
    batches = {
        "masked": {"features": features * (torch.arange(args.frames) < padded_lengths[:, None])[:, None], "feature_lengths": padded_lengths, **common},
        "unmasked": {"features": features, "feature_lengths": torch.full((args.batch,), args.frames), **common},
    }
    print(
        f"small model, batch {args.batch} x {args.frames} frames (masked: lengths {padded_lengths.min()}..{args.frames}), "
        f"{args.precision}, {torch.get_num_threads()} threads"
    )
    times = {kind: [] for kind in batches}
    for kind in batches:  # warm-up: oneDNN primitives, allocator
        train_step(model, optimizer, batches[kind], args.precision)
    for repeat in range(args.repeats):
        for kind in batches if repeat % 2 == 0 else reversed(batches):
            times[kind].append(timed_step(lambda: train_step(model, optimizer, batches[kind], args.precision)))
    medians = {kind: [statistics.median(column) for column in zip(*rows)] for kind, rows in times.items()}
    for kind, (wall, cpu) in medians.items():
        print(f"{kind:>8} step: {wall * 1000:7.1f} ms wall, {cpu * 1000:7.1f} ms CPU (median of {args.repeats})")
    wall_ratio, cpu_ratio = (masked / unmasked for masked, unmasked in zip(medians["masked"], medians["unmasked"]))
    if args.record:
        measured = {
            "batch": args.batch, "frames": args.frames, "shortest": int(padded_lengths.min()), "repeats": args.repeats,
            **{f"{kind}_{clock}_ms": seconds * 1000 for kind, row in medians.items() for clock, seconds in zip(("wall", "cpu"), row)},
            "wall_ratio": wall_ratio, "cpu_ratio": cpu_ratio,
        }
        write_record(args.record, f"masked_step-{args.precision}", measured, precision=args.precision)
    print(f"masked / unmasked step: {wall_ratio:.3f}x wall clock, {cpu_ratio:.3f}x CPU time (target <= 1.05)")


if __name__ == "__main__":
    main()

"""Utterances per second of ASRModule under Lightning against a minimal plain PyTorch loop.

Both train the same small model on the same pre-built batches (so the data loader is not
measured), with the same optimizer, CTC loss and gradient clipping. Only steady steps count:
the clock starts after ``--warmup`` steps of each run (oneDNN primitive creation, allocator
growth) and, for Lightning, after ``Trainer.fit``'s one-time setup, which is not throughput.
The two loops take turns ``--repeats`` times so that load from elsewhere hits both alike, and
the figure is the median of the per-turn ratios. Target ratio >= 0.95.

    python benchmarks/train_throughput.py [--steps 80] [--warmup 5] [--repeats 5]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from mfu import quickstart_datamodule
from torch.utils.data import DataLoader

from tmaps.training.module import ASRModule


def build(data_dir: Path, steps: int):
    """The quickstart's model and ``steps`` of its training batches (400 training utterances)."""
    datamodule, module, clip = quickstart_datamodule(data_dir, utterances=400)
    batches = []
    while len(batches) < steps:
        batches.extend(datamodule.train_dataloader())
    return module, batches[:steps], clip


def plain_loop(module: ASRModule, batches: list, clip: float, warmup: int) -> float:
    """Seconds of the steps after ``warmup`` in a minimal PyTorch loop."""
    model = module.model.train()
    optim = module.hparams.optim
    optimizer = torch.optim.AdamW(model.parameters(), lr=optim["lr"], weight_decay=optim["weight_decay"], betas=optim["betas"])
    ctc = torch.nn.CTCLoss(blank=0, zero_infinity=True)
    for step, batch in enumerate(batches):
        if step == warmup:
            started = time.perf_counter()
        log_probs, output_lengths = model(batch["features"], batch["feature_lengths"])
        loss = ctc(log_probs.transpose(0, 1), batch["targets"], output_lengths, batch["target_lengths"])
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
    return time.perf_counter() - started


class SteadyStepTimer(pl.Callback):
    """Seconds from the start of batch ``warmup`` to the end of training."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.seconds = float("nan")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if batch_idx == self.warmup:
            self.started = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        self.seconds = time.perf_counter() - self.started


def lightning_loop(module: ASRModule, batches: list, clip: float, warmup: int) -> float:
    """Seconds of the steps after ``warmup`` under ``Trainer.fit``."""
    timer = SteadyStepTimer(warmup)
    trainer = pl.Trainer(
        accelerator="cpu",
        precision="32-true",
        max_epochs=1,
        gradient_clip_val=clip,
        logger=False,
        callbacks=[timer],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    # batch_size=None hands the pre-built batches over one by one (a bare list would be read as a list of loaders)
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None, collate_fn=lambda batch: batch))
    return timer.seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        module, batches, clip = build(Path(data_dir), arguments.steps)
        utterances = sum(len(batch["records"]) for batch in batches[arguments.warmup :])
        plain_times, lightning_times = [], []
        for _ in range(arguments.repeats):
            plain_times.append(plain_loop(copy.deepcopy(module), batches, clip, arguments.warmup))
            lightning_times.append(lightning_loop(copy.deepcopy(module), batches, clip, arguments.warmup))
    ratios = [plain / lightning for plain, lightning in zip(plain_times, lightning_times)]
    for turn, (plain, lightning, ratio) in enumerate(zip(plain_times, lightning_times, ratios)):
        print(f"turn {turn}: plain {utterances / plain:.1f} utt/s, Lightning {utterances / lightning:.1f} utt/s, ratio {ratio:.3f}")
    plain_rate, lightning_rate = utterances / statistics.median(plain_times), utterances / statistics.median(lightning_times)
    print(
        f"plain PyTorch: {plain_rate:.1f} utt/s, Lightning ASRModule: {lightning_rate:.1f} utt/s "
        f"(median of {arguments.repeats}, {arguments.steps - arguments.warmup} steady steps each, {torch.get_num_threads()} threads)"
    )
    low, _, high = statistics.quantiles(ratios, n=4)
    print(f"throughput ratio Lightning/plain: {statistics.median(ratios):.3f} (median of {arguments.repeats} turns, quartiles {low:.3f}..{high:.3f})")


if __name__ == "__main__":
    main()

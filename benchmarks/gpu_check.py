"""The GPU path in one table (run through benchmarks/gpu_check.sh).

On CUDA, with the paper-size Wav2Letter (250/2000 channels) in bf16:

- training throughput (forward, CTC in fp32, backward, AdamW) and MFU, eager and with
  ``torch.compile``; MFU is FLOPs per step (``FlopCounterMode``) over step time over the peak of
  a bf16 matmul probe in the same run;
- the data loader (generated FLAC files -> log-mel -> SpecAugment -> padded batches, one worker
  per core) in seconds of audio per second, against the training step's rate;
- NAP and GradNAP passes on the GPU against inference and forward + backward;
- ``trainer=ddp`` with ``devices=1`` (the Hydra config group, Lightning DDP) against the plain step.

``--small`` runs the same checks with a small model on whatever device there is (the CPU here,
in fp32 where the CPU has no native bf16); the tests run it so. Inputs are synthetic tensors and
audio generated on the spot: no network, no corpus, no espeak. ``--json PATH`` also writes every
row with its measured numbers unrounded (``values``), which the tests check.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from mfu import DTYPES, matmul_peak, median_step_seconds, step_flops, train_step

from tmaps.models import Wav2Letter
from tmaps.text import Alphabet

PAPER = {"channels": [250] * 8 + [2000, 2000], "kernel_sizes": [48] + [7] * 7 + [32, 1], "strides": [2] + [1] * 9, "norm": "none"}
SMALL = {"channels": [32] * 8 + [64, 64], "kernel_sizes": [11] + [7] * 7 + [1, 1], "strides": [2] + [1] * 9, "norm": "batch"}
N_MELS = 40
PHONEMES = ["a", "e", "i", "o", "u", "s", "t", "n", "m", "k"]


Row = tuple[str, str, dict[str, float]]  # setting, result as printed, the measured numbers unrounded


class Table:
    """Rows of ``check | setting | result`` printed together at the end, each with its measured numbers."""

    def __init__(self, budget_s: float) -> None:
        self.rows: list[tuple[str, str, str, dict[str, float]]] = []
        self.deadline = time.perf_counter() + budget_s

    def run(self, check: str, measure: Callable[[], list[Row]]) -> None:
        """Add the rows of ``measure``, or one row saying why there are none."""
        if time.perf_counter() > self.deadline:
            self.rows.append((check, "-", "skipped: time budget spent", {}))
            return
        started = time.perf_counter()
        try:
            rows = measure()
        except Exception as error:  # one failing check must not hide the others' figures
            traceback.print_exc()
            rows = [("-", f"FAILED: {type(error).__name__}: {error}".splitlines()[0][:120], {})]
        for setting, result, values in rows:
            self.rows.append((check, setting, result, values))
        print(f"[{check}: {time.perf_counter() - started:.0f} s]", file=sys.stderr, flush=True)

    def print(self, title: str) -> None:
        cells = [row[:3] for row in self.rows]
        widths = [max(len(row[i]) for row in [("check", "setting", "result"), *cells]) for i in range(3)]
        lines = [title, " | ".join(name.ljust(width) for name, width in zip(("check", "setting", "result"), widths))]
        lines.append("-+-".join("-" * width for width in widths))
        lines += [" | ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in cells]
        print("\n".join(lines), flush=True)

    def write_json(self, path: Path, title: str) -> None:
        rows = [{"check": check, "setting": setting, "result": result, "values": values} for check, setting, result, values in self.rows]
        path.write_text(json.dumps({"title": title, "rows": rows}, indent=1) + "\n")


def flop_rate(flops_per_second: float) -> str:
    return f"{flops_per_second / 1e12:.1f} TFLOP/s" if flops_per_second >= 1e12 else f"{flops_per_second / 1e9:.1f} GFLOP/s"


def synthetic_batch(batch_size: int, frames: int, alphabet: Alphabet, device: torch.device, generator: torch.Generator) -> dict:
    """A batch dict of docs/design.md: random features, 12 characters a second, phoneme segments of 80 ms."""
    characters = frames * 12 // 100
    targets = torch.randint(1, alphabet.n_classes, (batch_size, characters), generator=generator)
    seconds = frames / 100
    records = []
    for index in range(batch_size):
        starts = np.arange(0.0, seconds - 0.08, 0.08)
        phonemes = [[PHONEMES[(index + i) % len(PHONEMES)], float(start), float(start + 0.08)] for i, start in enumerate(starts)]
        records.append({"id": f"synthetic-{index}", "text": alphabet.decode(targets[index].tolist()), "phonemes": phonemes})
    return {
        "features": torch.randn(batch_size, N_MELS, frames, generator=generator).to(device),
        "feature_lengths": torch.full((batch_size,), frames, device=device),
        "targets": targets.to(device),
        "target_lengths": torch.full((batch_size,), characters, device=device),
        "records": records,
    }


def check_training(
    model_config: dict, batches: list, precision: str, device: torch.device, warmup: int, compile_model: bool, peak: float
) -> tuple[list[Row], float]:
    """Rows of training throughput and MFU, eager and compiled, and the eager step in seconds."""
    alphabet = Alphabet.for_language("en")
    torch.manual_seed(0)
    model = Wav2Letter(n_features=N_MELS, n_classes=alphabet.n_classes, **model_config).to(device).train()
    flops = step_flops(model, batches[0], precision)
    audio_seconds = batches[0]["features"].shape[0] * batches[0]["features"].shape[-1] / 100
    rows, eager_seconds = [], float("nan")
    variants = [("eager", model)]
    if compile_model:
        variants.append(("torch.compile", torch.compile(copy.deepcopy(model))))
    for name, variant in variants:
        optimizer = torch.optim.AdamW(variant.parameters(), lr=1e-4)
        started = time.perf_counter()
        median_step_seconds(lambda batch: train_step(variant, optimizer, batch, precision), batches[:1], 1, device)  # compiles
        first_step = time.perf_counter() - started
        seconds = statistics.median(median_step_seconds(lambda batch: train_step(variant, optimizer, batch, precision), batches, warmup, device))
        if name == "eager":
            eager_seconds = seconds
        rows.append(
            (
                f"{precision} {name}",
                f"{seconds * 1e3:.1f} ms/step, {audio_seconds / seconds:.0f} audio s/s, {flop_rate(flops / seconds)}, "
                f"MFU {flops / seconds / peak:.2f} (first step {first_step:.1f} s)",
                {
                    "step_s": seconds,
                    "audio_s_per_s": audio_seconds / seconds,
                    "flops_per_s": flops / seconds,
                    "mfu": flops / seconds / peak,
                    "first_step_s": first_step,
                },
            )
        )
    return rows, eager_seconds


def write_audio_corpus(folder: Path, n_files: int, seconds: float, alphabet: Alphabet) -> list[dict]:
    """FLAC files of noisy tones and their records, as ``check_records`` leaves them."""
    import soundfile

    rng = np.random.default_rng(0)
    records = []
    for index in range(n_files):
        duration = seconds * rng.uniform(0.5, 1.5)
        time_axis = np.arange(int(duration * 16000)) / 16000
        audio = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 400) * time_axis) + 0.05 * rng.standard_normal(len(time_axis))
        path = folder / f"{index:04d}.flac"
        soundfile.write(path, audio.astype(np.float32), 16000)
        text = " ".join("".join(rng.choice(list("abcdefghij"), 4)) for _ in range(max(1, int(duration * 2))))
        records.append({"id": f"utt-{index}", "audio": str(path), "text": text, "duration": len(time_axis) / 16000, "sample_rate": 16000})
    return records


def check_loader(n_files: int, seconds: float, batch_seconds: float, train_audio_rate: float) -> list[Row]:
    """The training loader's rate with one worker per core, against the training step's rate."""
    from torch.utils.data import DataLoader

    from tmaps.data.dataset import DurationBatchSampler, SpeechDataset, collate
    from tmaps.data.features import LogMel, SpecAugment

    alphabet = Alphabet.for_language("en")
    workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    with tempfile.TemporaryDirectory() as folder:
        records = write_audio_corpus(Path(folder), n_files, seconds, alphabet)
        dataset = SpeechDataset(records, alphabet, LogMel(n_mels=N_MELS), augment=SpecAugment(2, 8, 2, 20))
        sampler = DurationBatchSampler(dataset.durations, batch_seconds, shuffle=True, seed=0)
        loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=workers, persistent_workers=True)
        list(loader)  # starts the workers
        started = time.perf_counter()
        audio = sum(float(batch["feature_lengths"].sum()) / 100 for _ in range(2) for batch in loader)
        rate = audio / (time.perf_counter() - started)
    return [
        (
            f"loader, {workers} workers",
            f"{rate:.0f} audio s/s = {rate / train_audio_rate:.2f}x the eager training rate ({train_audio_rate:.0f} audio s/s)",
            {"workers": workers, "audio_s_per_s": rate, "over_training_rate": rate / train_audio_rate},
        )
    ]


def check_profiles(model_config: dict, batches: list, device: torch.device, repeats: int) -> list[Row]:
    """NAP against inference and GradNAP against forward + backward, best of interleaved repeats."""
    from tmaps.introspect.nap import NAP, GradNAP

    alphabet = Alphabet.for_language("en")
    model = Wav2Letter(n_features=N_MELS, n_classes=alphabet.n_classes, **model_config).to(device).eval()
    layers = ["conv1", "conv4", "conv7"]

    def inference() -> None:
        with torch.no_grad():
            for batch in batches:
                model(batch["features"], batch["feature_lengths"])

    def forward_backward() -> None:
        for batch in batches:
            log_probs, _ = model(batch["features"], batch["feature_lengths"])
            log_probs.max(dim=-1).values.sum().backward()
        model.zero_grad(set_to_none=True)

    runs = [
        inference,
        lambda: NAP(model, layers).compute(batches, "phoneme"),
        forward_backward,
        lambda: GradNAP(model, layers, target="predicted").compute(batches, "phoneme"),
    ]
    best = [float("inf")] * len(runs)
    for _ in range(repeats):
        for index, run in enumerate(runs):
            best[index] = min(best[index], _device_seconds(run, device))
    return [
        (
            f"NAP {','.join(layers)}",
            f"{best[1] * 1e3:.0f} ms = {best[1] / best[0]:.2f}x inference ({best[0] * 1e3:.0f} ms)",
            {"seconds": best[1], "over_inference": best[1] / best[0]},
        ),
        (
            "GradNAP (predicted)",
            f"{best[3] * 1e3:.0f} ms = {best[3] / best[2]:.2f}x forward+backward ({best[2] * 1e3:.0f} ms)",
            {"seconds": best[3], "over_forward_backward": best[3] / best[2]},
        ),
    ]


def _device_seconds(run: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def check_ddp(model_config: dict, batches: list, device: torch.device, steps: int, warmup: int, plain_seconds: float) -> list[Row]:
    """``trainer=ddp trainer.devices=1`` (the config group, composed by Hydra) on ``ASRModule``."""
    import pytorch_lightning as pl
    from hydra import compose, initialize_config_module
    from hydra.utils import instantiate
    from torch.utils.data import DataLoader

    from tmaps.training.module import ASRModule
    from tmaps.training.resolvers import register_resolvers

    overrides = ["trainer=ddp", "trainer.devices=1", f"trainer.max_steps={steps}", "trainer.max_epochs=-1", "trainer.num_sanity_val_steps=0"]
    if device.type == "cpu":
        overrides += ["trainer.accelerator=cpu", "trainer.sync_batchnorm=false", "trainer.precision=${cpu_precision:}"]
    register_resolvers()
    with initialize_config_module(config_module="tmaps.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=[*overrides, "paths.output_dir=."])

    class Timer(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
            if batch_idx == warmup:
                self.started = time.perf_counter()

        def on_train_end(self, trainer, pl_module) -> None:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            self.seconds = (time.perf_counter() - self.started) / (steps - warmup)

    alphabet = Alphabet.for_language("en")
    module = ASRModule(dict(model_config), alphabet.chars, {"n_mels": N_MELS}, {"lr": 1e-4, "schedule": "constant"})
    timer = Timer()
    with tempfile.TemporaryDirectory() as folder:
        trainer = instantiate(
            cfg.trainer, default_root_dir=folder, logger=False, callbacks=[timer], enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
        )
        cpu_batches = [{key: value.cpu() if torch.is_tensor(value) else value for key, value in batch.items()} for batch in batches]
        loader = DataLoader([cpu_batches[i % len(cpu_batches)] for i in range(steps)], batch_size=None, collate_fn=lambda batch: batch)
        trainer.fit(module, train_dataloaders=loader)
    return [
        (
            f"trainer=ddp devices=1 ({trainer.precision})",
            f"{timer.seconds * 1e3:.1f} ms/step = {timer.seconds / plain_seconds:.2f}x the plain eager step",
            {"step_s": timer.seconds, "over_plain_step": timer.seconds / plain_seconds},
        )
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a small model and short runs (any device; what the tests run)")
    parser.add_argument("--no-compile", action="store_true", help="leave out torch.compile (minutes on a CPU)")
    parser.add_argument("--budget-s", type=float, default=420, help="checks that would start after this many seconds are skipped")
    parser.add_argument("--json", type=Path, default=None, help="also write the table with its measured numbers unrounded to this file")
    arguments = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        precision = "bf16-mixed"
    else:
        from tmaps.training.precision import cpu_precision

        precision = cpu_precision()
    small = arguments.small or device.type == "cpu"
    model_config = SMALL if small else PAPER
    batch_size, frames = (4, 300) if small else (16, 1000)  # 12 s / 160 s of speech a batch
    steps, warmup = (3, 1) if small else (20, 3)
    generator = torch.Generator().manual_seed(0)
    alphabet = Alphabet.for_language("en")
    batches = [synthetic_batch(batch_size, frames, alphabet, device, generator) for _ in range(steps)]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}"
    table = Table(arguments.budget_s)
    peak = matmul_peak(device, DTYPES[precision], max_size=2048 if small else 8192)
    table.rows.append(("peak", f"{precision} matmul probe", flop_rate(peak), {"flops_per_s": peak}))
    eager = {}

    def training() -> list[Row]:
        rows, eager["seconds"] = check_training(model_config, batches, precision, device, warmup, not arguments.no_compile, peak)
        return rows

    table.run("train", training)
    train_audio_rate = batch_size * frames / 100 / eager.get("seconds", float("nan"))
    n_files, seconds, batch_seconds = (24, 2.0, 12.0) if small else (400, 8.0, 160.0)
    table.run("data", lambda: check_loader(n_files, seconds, batch_seconds, train_audio_rate))
    table.run("profiles", lambda: check_profiles(model_config, batches, device, repeats=1 if small else 3))
    table.run("ddp", lambda: check_ddp(model_config, batches, device, steps + warmup + 2, warmup, eager.get("seconds", float("nan"))))
    model_name = "small Wav2Letter (32/64 channels)" if small else "paper Wav2Letter (250/2000 channels)"
    title = f"gpu_check: {name}, torch {torch.__version__}, {model_name}, batch {batch_size} x {frames} frames"
    table.print(title)
    if arguments.json is not None:
        table.write_json(arguments.json, title)


if __name__ == "__main__":
    main()

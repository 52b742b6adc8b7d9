"""Model FLOPs utilization of quickstart training, fp32 and bf16, model-only and end to end.

- FLOPs per step: ``torch.utils.flop_counter.FlopCounterMode`` over one training step
  (forward, CTC, backward) of the quickstart's small Wav2Letter on a real quickstart batch.
- Peak: the best rate of square matmuls on this machine, probed in the same run, per precision;
  never below the fp32 peak, since a CPU without native bf16 (AVX2 only) computes bf16 through
  its fp32 units, slower than fp32: there the bf16 probe is the slow emulated path, which conv
  layers beat, and MFU against it would exceed 1.
- Model-only: forward, CTC, backward and AdamW on batches held in memory, median step time.
- End to end: ``Trainer.fit`` over the quickstart's training loader (its workers, log-mel,
  Lightning, logging), one epoch; FLOPs scale with the padded frames of each batch.

MFU = FLOPs / second / peak. bf16 runs under ``torch.autocast`` (CTC in fp32), as Lightning's
``precision="bf16-mixed"`` does.

    python benchmarks/mfu.py [--utterances 300] [--steps 8] [--precisions 32-true,bf16-mixed]

The last line gives every MFU figure.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

DTYPES = {"32-true": torch.float32, "bf16-mixed": torch.bfloat16}


def matmul_peak(device: torch.device, dtype: torch.dtype, max_size: int = 4096, budget_s: float = 0.05) -> float:
    """FLOP/s of the fastest of a few square matmuls, grown until one takes ``budget_s``."""
    size, seconds = 256, 0.0
    while True:
        a = torch.randn(size, size, device=device, dtype=dtype)
        b = torch.randn(size, size, device=device, dtype=dtype)
        seconds = min(_timed(lambda: a @ b, device) for _ in range(5))
        if seconds >= budget_s or size >= max_size:
            return 2 * size**3 / seconds
        size *= 2


def _timed(run: Callable[[], object], device: torch.device) -> float:
    _synchronize(device)
    started = time.perf_counter()
    run()
    _synchronize(device)
    return time.perf_counter() - started


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, precision: str):
    """Lightning's autocast for ``precision`` (none for ``32-true``)."""
    if precision == "32-true":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[precision])


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: Mapping, precision: str) -> None:
    """Forward, CTC (fp32), backward and optimizer step on one batch of the docs/design.md dict."""
    device = next(model.parameters()).device
    with autocast(device, precision):
        log_probs, output_lengths = model(batch["features"], batch["feature_lengths"])
    loss = torch.nn.functional.ctc_loss(
        log_probs.transpose(0, 1).float(), batch["targets"], output_lengths, batch["target_lengths"], zero_infinity=True
    )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def step_flops(model: torch.nn.Module, batch: Mapping, precision: str) -> int:
    """FLOPs of forward + backward of one step (the optimizer's elementwise work is not counted)."""
    device = next(model.parameters()).device
    counter = FlopCounterMode(display=False)
    with counter:
        with autocast(device, precision):
            log_probs, output_lengths = model(batch["features"], batch["feature_lengths"])
        loss = torch.nn.functional.ctc_loss(
            log_probs.transpose(0, 1).float(), batch["targets"], output_lengths, batch["target_lengths"], zero_infinity=True
        )
        loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def median_step_seconds(step: Callable[[Mapping], None], batches: list[Mapping], warmup: int, device: torch.device) -> list[float]:
    """Seconds of each step after ``warmup`` untimed ones, one batch after another."""
    for batch in batches[:warmup]:
        step(batch)
    return [_timed(lambda: step(batch), device) for batch in batches[warmup:]]


def quickstart_datamodule(data_dir: Path, utterances: int):
    """The quickstart's data and module config with a smaller train split."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from tmaps.data import SpeechDataModule
    from tmaps.training.module import ASRModule
    from tmaps.training.resolvers import register_resolvers

    register_resolvers()
    with initialize_config_module(config_module="tmaps.conf", version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[
                "experiment=quickstart",
                f"paths.data_dir={data_dir}",
                f"data.source.n_utterances={{train:{utterances},dev:8,test:8,test_unseen:8}}",
            ],
        )
    datamodule = SpeechDataModule(**OmegaConf.to_container(cfg.data, resolve=True))
    optim = {**OmegaConf.to_container(cfg.optim), "schedule": "constant"}
    module = ASRModule(OmegaConf.to_container(cfg.model), datamodule.alphabet.chars, datamodule.feature_config, optim)
    datamodule.output_stride = module.model.stride
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule, module, cfg.trainer.gradient_clip_val


def end_to_end(module, datamodule, clip: float, precision: str, flops_per_frame: float) -> tuple[float, float]:
    """FLOP/s and seconds of one ``Trainer.fit`` epoch over the training loader, setup excluded."""
    import pytorch_lightning as pl

    class Frames(pl.Callback):
        def __init__(self) -> None:
            self.frames = 0

        def on_train_start(self, trainer, pl_module) -> None:
            self.started = time.perf_counter()

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
            self.frames += batch["features"].shape[0] * batch["features"].shape[-1]

        def on_train_end(self, trainer, pl_module) -> None:
            self.seconds = time.perf_counter() - self.started

    frames = Frames()
    trainer = pl.Trainer(
        accelerator="cpu",
        precision=precision,
        max_epochs=1,
        gradient_clip_val=clip,
        logger=False,
        callbacks=[frames],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(module, train_dataloaders=datamodule.train_dataloader())
    return flops_per_frame * frames.frames / frames.seconds, frames.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=300, help="train utterances for the end-to-end epoch")
    parser.add_argument("--steps", type=int, default=8, help="timed model-only steps per precision")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--precisions", default="32-true,bf16-mixed")
    parser.add_argument("--data-dir", type=Path, default=None)
    arguments = parser.parse_args()
    device = torch.device("cpu")
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as scratch:
        datamodule, module, clip = quickstart_datamodule(arguments.data_dir or Path(scratch), arguments.utterances)
        batches = list(datamodule.train_dataloader())
        while len(batches) < arguments.warmup + arguments.steps:
            batches += batches
        batches = batches[: arguments.warmup + arguments.steps]
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}")
        figures = []
        fp32_peak = matmul_peak(device, torch.float32)
        for precision in arguments.precisions.split(","):
            probed = matmul_peak(device, DTYPES[precision])
            peak = max(probed, fp32_peak)
            if probed < fp32_peak:
                print(f"{precision}: matmul probe {probed / 1e9:.1f} GFLOP/s is below fp32's; the fp32 peak is the hardware's peak")
            model = copy.deepcopy(module.model).train()
            flops = [step_flops(model, batch, precision) for batch in batches[arguments.warmup :]]
            frames = [batch["features"].shape[0] * batch["features"].shape[-1] for batch in batches[arguments.warmup :]]
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
            seconds = median_step_seconds(lambda batch: train_step(model, optimizer, batch, precision), batches, arguments.warmup, device)
            model_rate = sum(flops) / sum(seconds)
            flops_per_frame = sum(flops) / sum(frames)
            e2e_rate, e2e_seconds = end_to_end(copy.deepcopy(module), datamodule, clip, precision, flops_per_frame)
            print(
                f"{precision:>10}: peak {peak / 1e9:7.1f} GFLOP/s | model-only {statistics.median(seconds) * 1e3:6.0f} ms/step "
                f"(median of {len(seconds)}), {statistics.mean(flops) / 1e9:5.1f} GFLOP/step, {model_rate / 1e9:6.1f} GFLOP/s, "
                f"MFU {model_rate / peak:.3f} | end to end {e2e_seconds:5.1f} s/epoch, {e2e_rate / 1e9:6.1f} GFLOP/s, MFU {e2e_rate / peak:.3f}"
            )
            figures.append(f"{precision} model-only {model_rate / peak:.3f}, end to end {e2e_rate / peak:.3f}")
    print(f"mfu: {'; '.join(figures)}")


if __name__ == "__main__":
    main()

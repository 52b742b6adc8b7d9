"""Utterances per second of ASRModule under Lightning against a minimal plain PyTorch loop.

Both train the same small model on the same pre-built batches (so the data loader is not
measured), with the same optimizer, CTC loss and gradient clipping. Target ratio >= 0.95.

    python benchmarks/train_throughput.py [--steps 60]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from tmaps.data import SpeechDataModule
from tmaps.training.module import ASRModule


def build(data_dir: Path, steps: int):
    with initialize_config_module(config_module="tmaps.conf", version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[
                "experiment=quickstart",
                f"paths.data_dir={data_dir}",
                "data.source.n_utterances={train:400,dev:8,test:8,test_unseen:8}",
                "data.spec_augment=null",
            ],
        )
    optim = {**OmegaConf.to_container(cfg.optim), "schedule": "constant"}
    datamodule = SpeechDataModule(**OmegaConf.to_container(cfg.data, resolve=True))
    module = ASRModule(OmegaConf.to_container(cfg.model), datamodule.alphabet.chars, datamodule.feature_config, optim)
    datamodule.output_stride = module.model.stride
    datamodule.prepare_data()
    datamodule.setup("fit")
    batches = []
    while len(batches) < steps:
        batches.extend(datamodule.train_dataloader())
    return module, batches[:steps], cfg.trainer.gradient_clip_val


def plain_loop(module: ASRModule, batches: list, clip: float) -> float:
    model = module.model.train()
    optim = module.hparams.optim
    optimizer = torch.optim.AdamW(model.parameters(), lr=optim["lr"], weight_decay=optim["weight_decay"], betas=optim["betas"])
    ctc = torch.nn.CTCLoss(blank=0, zero_infinity=True)
    started = time.perf_counter()
    for batch in batches:
        log_probs, output_lengths = model(batch["features"], batch["feature_lengths"])
        loss = ctc(log_probs.transpose(0, 1), batch["targets"], output_lengths, batch["target_lengths"])
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
    return time.perf_counter() - started


def lightning_loop(module: ASRModule, batches: list, clip: float) -> float:
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        gradient_clip_val=clip,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    started = time.perf_counter()
    # batch_size=None hands the pre-built batches over one by one (a bare list would be read as a list of loaders)
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None, collate_fn=lambda batch: batch))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        module, batches, clip = build(Path(data_dir), arguments.steps)
        utterances = sum(len(batch["records"]) for batch in batches)
        plain_times, lightning_times = [], []
        for _ in range(arguments.repeats):
            plain_times.append(plain_loop(copy.deepcopy(module), batches, clip))
            lightning_times.append(lightning_loop(copy.deepcopy(module), batches, clip))
    plain_rate, lightning_rate = utterances / min(plain_times), utterances / min(lightning_times)
    print(f"plain PyTorch: {plain_rate:.1f} utt/s, Lightning ASRModule: {lightning_rate:.1f} utt/s ({arguments.steps} steps, best of {arguments.repeats})")
    print(f"throughput ratio Lightning/plain: {lightning_rate / plain_rate:.3f}")


if __name__ == "__main__":
    main()

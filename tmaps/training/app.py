"""What ``tmaps-train`` and ``tmaps-eval`` do with a composed Hydra config."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from tmaps.callbacks.transfer import setup_transfer
from tmaps.data import SpeechDataModule
from tmaps.inference.decoding import build_decoder
from tmaps.training.checkpoint import check_compatible
from tmaps.progress import set_progress_bars
from tmaps.text import Alphabet
from tmaps.training.module import ASRModule

log = logging.getLogger(__name__)


def wandb_group(task_name: str) -> str:
    """The W&B group of a run (``${wandb_group:${task_name}}`` in conf/logger/wandb.yaml).

    ``task_name`` for a single run; ``<task_name>-<sweep folder name>`` in a multirun, so that
    the runs of one sweep share a group and the runs of two sweeps never do.
    """
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return f"{task_name}-{Path(HydraConfig.get().sweep.dir).name}"
    return task_name


OmegaConf.register_new_resolver("wandb_group", wandb_group, replace=True)


def plain(config: DictConfig | None) -> dict | None:
    return None if config is None else OmegaConf.to_container(config, resolve=True)


def instantiate_list(group: DictConfig | None) -> list:
    """Instantiate every ``_target_`` entry of a config group such as ``callbacks`` or ``logger``."""
    if not group:
        return []
    return [hydra.utils.instantiate(entry) for entry in group.values() if entry and "_target_" in entry]


def build_datamodule(cfg: DictConfig) -> SpeechDataModule:
    return SpeechDataModule(**plain(cfg.data))


def checkpoint_datamodule(data: Mapping, alphabet: Alphabet, features: Mapping, checkpoint_path: str | Path) -> SpeechDataModule:
    """The corpus of a ``data`` config read with a checkpoint's features, for its model.

    Raises:
        ValueError: the data's language has another alphabet than the checkpoint's output.
    """
    datamodule = SpeechDataModule(**{**data, "features": {**(data.get("features") or {}), **features}})
    if datamodule.alphabet != alphabet:
        raise ValueError(
            f"checkpoint {checkpoint_path} predicts the alphabet {alphabet.chars!r}, but data "
            f"language {data.get('language')!r} uses {datamodule.alphabet.chars!r}"
        )
    return datamodule


def build_module(cfg: DictConfig, datamodule: SpeechDataModule) -> ASRModule:
    return ASRModule(
        model=plain(cfg.model),
        alphabet=datamodule.alphabet.chars,
        features=datamodule.feature_config,
        optim=plain(cfg.optim),
        topo=plain(cfg.get("topo")),
        compile=cfg.get("compile", False),
    )


def train(cfg: DictConfig) -> float | None:
    """Fit, then test the best checkpoint; return the metric named by ``cfg.optimized_metric``."""
    started = time.perf_counter()
    set_progress_bars(None if cfg.trainer.get("enable_progress_bar", True) else False)
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule)
    datamodule.output_stride = module.model.stride
    if cfg.get("ckpt_path"):
        check_compatible(cfg.ckpt_path, {"model": module.hparams.model, "alphabet": module.hparams.alphabet})
    callbacks = instantiate_list(cfg.get("callbacks"))
    callbacks += setup_transfer(module, plain(cfg.get("transfer")))
    if cfg.get("rich_progress_bar") and cfg.trainer.get("enable_progress_bar", True):
        callbacks.append(pl.callbacks.RichProgressBar())
    loggers = instantiate_list(cfg.get("logger"))
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for logger in loggers:
        logger.log_hyperparams(plain(cfg))
    # A W&B run left open would take the next job of a multirun, even after this one failed.
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
        metrics = {name: float(value) for name, value in trainer.callback_metrics.items() if torch.is_tensor(value) and value.numel() == 1}

        if cfg.get("test") and not trainer.fast_dev_run:
            best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
            results = test_splits(trainer, module, datamodule, ckpt_path=best or None)
            metrics.update({f"{split}/{name}": value for split, row in results.items() for name, value in row.items()})
            print_summary(results, title=f"tmaps: test results of {best or 'the final weights'}")
            for logger in loggers:
                logger.log_metrics({f"summary/{key}": value for key, value in metrics.items() if key.count("/") == 2})
        log.info("run finished in %.1f s; outputs in %s", time.perf_counter() - started, cfg.paths.output_dir)
    finally:
        _finish_wandb(loggers)
    return metrics.get(cfg.get("optimized_metric")) if cfg.get("optimized_metric") else None


def test_splits(trainer: pl.Trainer, module: ASRModule, datamodule: SpeechDataModule, ckpt_path: str | None) -> dict:
    """WER and CER of every test split (``test``, ``test_unseen``, ...) of the datamodule."""
    results = {}
    for split, loader in datamodule.test_loaders().items():
        (row,) = trainer.test(module, dataloaders=loader, ckpt_path=ckpt_path, verbose=False, weights_only=True)
        results[split] = {"cer": row["test/cer"], "wer": row["test/wer"], "utterances": len(loader.dataset)}
    return results


def print_summary(results: dict, title: str) -> None:
    lines = [title, f"{'split':<14}{'utterances':>11}{'CER':>9}{'WER':>9}"]
    lines += [f"{split:<14}{row['utterances']:>11}{row['cer']:>9.4f}{row['wer']:>9.4f}" for split, row in results.items()]
    print("\n".join(lines), flush=True)


def evaluate(cfg: DictConfig) -> dict:
    """WER and CER of ``cfg.ckpt_path`` on the test splits of ``cfg.data``, decoded by ``cfg.decoder``
    (a beam search's lexicon and LM come from the corpus' train transcripts unless ``decoder.text`` is set)."""
    if not cfg.get("ckpt_path"):
        raise ValueError("tmaps-eval needs ckpt_path=<file.ckpt>")
    set_progress_bars(None if cfg.trainer.get("enable_progress_bar", True) else False)
    module = ASRModule.from_checkpoint(cfg.ckpt_path)
    datamodule = checkpoint_datamodule(plain(cfg.data), module.alphabet, module.hparams.features, cfg.ckpt_path)
    datamodule.output_stride = module.model.stride
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, logger=False, callbacks=[], enable_checkpointing=False)
    datamodule.prepare_data()
    datamodule.setup("test")
    train_text = datamodule.manifest_path("train")
    module.decoder = build_decoder(plain(cfg.get("decoder")), module.alphabet, cfg.paths.output_dir, train_text if train_text.is_file() else None)
    results = test_splits(trainer, module, datamodule, ckpt_path=None)
    print_summary(results, title=f"tmaps: {Path(cfg.ckpt_path).name}")
    return results


def _finish_wandb(loggers: list) -> None:
    """End the W&B run so that the next job of a multirun starts its own."""
    if any(isinstance(logger, pl.loggers.WandbLogger) for logger in loggers):
        import wandb

        wandb.finish()

"""What ``tmaps-eval`` does with a composed Hydra config: WER and CER of a checkpoint on a corpus' test splits."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from tmaps.commands.wrapper import task_wrapper
from tmaps.data import SpeechDataModule, checkpoint_datamodule
from tmaps.data.datamodule import skip_report_lines
from tmaps.inference.decoding import build_decoder
from tmaps.progress import set_progress_bars
from tmaps.training.loggers import log_table
from tmaps.training.module import ASRModule

log = logging.getLogger(__name__)


def test_splits(trainer: pl.Trainer, module: ASRModule, datamodule: SpeechDataModule, ckpt_path: str | None) -> dict:
    """WER and CER of every test split (``test``, ``test_unseen``, ...), logged as ``<split>/cer`` and ``<split>/wer``."""
    results = {}
    for split, loader in datamodule.test_loaders().items():
        module.test_split = split
        (row,) = trainer.test(module, dataloaders=loader, ckpt_path=ckpt_path, verbose=False, weights_only=True)
        results[split] = {"cer": row[f"{split}/cer"], "wer": row[f"{split}/wer"], "utterances": len(loader.dataset)}
    return results


def report_skips(datamodule: SpeechDataModule, trainer: pl.Trainer) -> None:
    """Print and log the utterances kept and skipped (by reason) of every split the run read."""
    report = datamodule.skip_report()  # on every rank: it sums the ranks' decoding failures
    if not trainer.is_global_zero:
        return
    lines = skip_report_lines(report)
    print("\n".join(["tmaps: utterances kept and skipped per split", *lines]), flush=True)
    log.info("utterances kept and skipped per split:\n%s", "\n".join(lines))
    rows = [[split, reason, count] for split, row in report.items() for reason, count in [("kept", row["kept"]), *row["skipped"].items()]]
    log_table(trainer.loggers, "data/utterances", ["split", "reason", "count"], rows, trainer.global_step)
    counts = {}
    for split, row in report.items():
        counts |= {f"data/{split}/kept": row["kept"], f"data/{split}/skipped": sum(row["skipped"].values())}
    for logger in trainer.loggers:
        logger.log_metrics(counts, step=trainer.global_step)
        logger.save()  # the run is over: nothing else would write these out


def print_summary(results: dict, title: str) -> None:
    lines = [title, f"{'split':<14}{'utterances':>11}{'CER':>9}{'WER':>9}"]
    lines += [f"{split:<14}{row['utterances']:>11}{row['cer']:>9.4f}{row['wer']:>9.4f}" for split, row in results.items()]
    print("\n".join(lines), flush=True)


def evaluate(cfg: DictConfig) -> dict:
    """WER and CER of ``cfg.ckpt_path`` on the test splits of ``cfg.data``, decoded by ``cfg.decoder``
    (a beam search's lexicon and LM come from the corpus' train transcripts unless ``decoder.text`` is set)."""
    if not cfg.get("ckpt_path"):
        raise ValueError("ckpt_path is not set: name the checkpoint to evaluate, ckpt_path=<file.ckpt>")
    set_progress_bars(None if cfg.trainer.get("enable_progress_bar", True) else False)
    module = ASRModule.from_checkpoint(cfg.ckpt_path)
    datamodule = checkpoint_datamodule(OmegaConf.to_container(cfg.data, resolve=True), module.alphabet, module.hparams.features, cfg.ckpt_path)
    datamodule.output_stride = module.model.stride
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, logger=False, callbacks=[], enable_checkpointing=False)
    datamodule.prepare_data()
    datamodule.setup("test")
    train_text = datamodule.manifest_path("train")
    decoder = OmegaConf.to_container(cfg.decoder, resolve=True) if cfg.get("decoder") else None
    module.decoder = build_decoder(decoder, module.alphabet, cfg.paths.output_dir, train_text if train_text.is_file() else None)
    results = test_splits(trainer, module, datamodule, ckpt_path=None)
    print_summary(results, title=f"tmaps: {Path(cfg.ckpt_path).name}")
    report_skips(datamodule, trainer)
    return results


@hydra.main(version_base="1.3", config_path="pkg://tmaps.conf", config_name="eval")
@task_wrapper("tmaps-eval")
def main(cfg: DictConfig) -> None:
    """``tmaps-eval ckpt_path=... data=...``: WER and CER of a checkpoint on a corpus' test splits."""
    evaluate(cfg)


if __name__ == "__main__":
    main()

"""What ``tmaps-train`` does with a composed Hydra config: fit, then test the best checkpoint."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import hydra
import pandas as pd
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from tmaps.callbacks.transfer import setup_transfer
from tmaps.checkpoint import check_compatible, check_writable
from tmaps.commands.eval import print_summary, report_skips, test_splits
from tmaps.commands.report import TEST_RESULTS_FILE, TEST_UTTERANCES_FILE, write_report
from tmaps.commands.wrapper import task_wrapper
from tmaps.data import SpeechDataModule
from tmaps.progress import set_progress_bars
from tmaps.studies.runs import utterance_errors
from tmaps.training.checkpoint_io import AtomicCheckpointIO
from tmaps.training.module import ASRModule
from tmaps.training.schema import check_config_types

log = logging.getLogger(__name__)


def plain(config: DictConfig | None) -> dict | None:
    return None if config is None else OmegaConf.to_container(config, resolve=True)


def instantiate_list(group: DictConfig | None) -> list:
    """Instantiate every ``_target_`` entry of a config group such as ``callbacks`` or ``logger``."""
    if not group:
        return []
    return [hydra.utils.instantiate(entry) for entry in group.values() if entry and "_target_" in entry]


def build_datamodule(cfg: DictConfig) -> SpeechDataModule:
    return SpeechDataModule(**plain(cfg.data))


def build_module(cfg: DictConfig, datamodule: SpeechDataModule) -> ASRModule:
    return ASRModule(
        model=plain(cfg.model),
        alphabet=datamodule.alphabet.chars,
        features=datamodule.feature_config,
        optim=plain(cfg.optim),
        topo=plain(cfg.get("topo")),
        compile=cfg.get("compile", False),
    )


def check_complete(cfg: DictConfig) -> None:
    """Raise ``ValueError`` naming every mandatory value (``???``) that the config leaves unset."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ValueError(f"mandatory config values are not set: {missing}; add them as overrides, e.g. {missing[0]}=...")


def check_trains(cfg: DictConfig) -> None:
    """Raise ``ValueError`` naming the key when the trainer is set to take no training step, unless ``allow_untrained``.

    Such a run tests the initial weights and writes no checkpoint, and its report looks like any other.
    """
    untrained = [key for key in ("max_epochs", "max_steps") if cfg.trainer.get(key) == 0]
    if untrained and not cfg.get("allow_untrained"):
        raise ValueError(
            f"trainer.{untrained[0]}=0 trains nothing: the run would test untrained weights and write no checkpoint; "
            "set allow_untrained=true if that is what you want"
        )
    if untrained:
        log.warning("trainer.%s=0 and allow_untrained=true: testing the untrained weights", untrained[0])


def train(cfg: DictConfig) -> float | None:
    """Fit, then test the best checkpoint; return the metric named by ``cfg.optimized_metric``.

    That is ``val/cer_best`` by default: the best validation CER of the run, which a sweep
    minimizes. Unset mandatory values, config types and a trainer that would take no step (:func:`check_trains`) are
    checked first; checkpoint folders are checked writable before training. At the end, a table of the utterances kept and skipped per split is printed and
    logged.
    """
    started = time.perf_counter()
    set_progress_bars(None if cfg.trainer.get("enable_progress_bar", True) else False)
    check_complete(cfg)
    check_config_types(cfg)
    check_trains(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule)
    datamodule.output_stride = module.model.stride
    if cfg.get("ckpt_path"):
        check_compatible(cfg.ckpt_path, {"model": module.hparams.model, "alphabet": module.hparams.alphabet})
    checkpoints = instantiate_list(cfg.get("checkpoints"))
    for checkpoint in checkpoints:
        check_writable(checkpoint.dirpath)
    if not checkpoints:
        log.warning("checkpoints=none: this run writes no checkpoint, and tests its final weights")
    callbacks = checkpoints + instantiate_list(cfg.get("callbacks"))
    callbacks += setup_transfer(module, plain(cfg.get("transfer")))
    if cfg.get("rich_progress_bar") and cfg.trainer.get("enable_progress_bar", True):
        callbacks.append(pl.callbacks.RichProgressBar())
    loggers = instantiate_list(cfg.get("logger"))
    trainer: pl.Trainer = hydra.utils.instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()], enable_checkpointing=bool(checkpoints)
    )
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
            if trainer.is_global_zero:
                run_dir = Path(cfg.paths.output_dir)
                pd.DataFrame.from_dict(results, orient="index").rename_axis("split").reset_index().to_csv(run_dir / TEST_RESULTS_FILE, index=False)
                write_test_utterances(trainer, module, datamodule, run_dir / TEST_UTTERANCES_FILE)
        report_skips(datamodule, trainer)
        log.info("run finished in %.1f s; outputs in %s", time.perf_counter() - started, cfg.paths.output_dir)
    finally:
        _finish_wandb(loggers)
    if trainer.is_global_zero:  # after W&B's closing lines, so that the last lines name the files
        print_outputs(Path(cfg.paths.output_dir), end_of_run_report(cfg.paths.output_dir) if cfg.get("report") else None)
    return metrics.get(cfg.get("optimized_metric")) if cfg.get("optimized_metric") else None


def write_test_utterances(trainer: pl.Trainer, module: ASRModule, datamodule: SpeechDataModule, path: Path) -> None:
    """Every test utterance's edit counts under the weights just tested, in the trainer's precision: the report's CIs over utterances."""
    module.eval()

    def forward(features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with trainer.precision_plugin.forward_context():
            return module(features.to(module.device), lengths.to(module.device))

    rows = [
        {"split": split, **row}
        for split, loader in datamodule.test_loaders().items()
        for row in utterance_errors(forward, module.decode, loader)["utterances"]
    ]
    pd.DataFrame(rows).to_csv(path, index=False)


def end_of_run_report(run_dir: str) -> Path | None:
    """The run's report page, or None with a warning: a finished run never fails for its report."""
    try:
        return write_report(run_dir)
    except ValueError as error:
        log.warning("no report page: %s", error)
        return None


def print_outputs(run_dir: Path, report: Path | None) -> None:
    """Name what the run wrote: checkpoints, the evolution GIF of every map, the profiles and the report."""
    lines = [f"tmaps: outputs in {run_dir}"]
    lines += [f"  checkpoint  {path}" for path in sorted(run_dir.glob("checkpoints/*.ckpt"))]
    lines += [f"  map         {path}" for path in sorted(run_dir.glob("figures/*/evolution.gif"))]
    profiles = sorted(run_dir.glob("profiles/*.npz"))
    if profiles:
        lines.append(f"  profiles    {profiles[-1]} (and {len(profiles) - 1} earlier)")
    if report is not None:
        lines.append(f"  report      {report}")
    print("\n".join(lines), flush=True)


def _finish_wandb(loggers: list) -> None:
    """End the W&B run so that the next job of a multirun starts its own."""
    if any(isinstance(logger, pl.loggers.WandbLogger) for logger in loggers):
        import wandb

        wandb.finish()


@hydra.main(version_base="1.3", config_path="pkg://tmaps.conf", config_name="train")
@task_wrapper("tmaps-train")
def main(cfg: DictConfig) -> float | None:
    """``tmaps-train``: train a speech recogniser from the Hydra config in ``conf/train.yaml``."""
    return train(cfg)


if __name__ == "__main__":
    main()

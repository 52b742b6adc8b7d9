"""Wall time per epoch of quickstart-like training with callbacks=default against callbacks=none.

    python benchmarks/callback_overhead.py [--train N] [--epochs E] [extra Hydra overrides, e.g. topo=weight_similarity]

Both runs train the quickstart's model on the same synthetic corpus (the quickstart's dev set,
a smaller train set so that the benchmark takes minutes), without loggers. An epoch is timed
from its start to the next one's (validation and every callback included). The callbacks'
cost per epoch is the difference of the mean epoch times; since it does not grow with the
train set, the last line also projects it onto an epoch of the quickstart's 3000 train
utterances (validation scaled along, which overstates that epoch by a few percent),
where the issue's target is a ratio of at most 1.10.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import hydra
import pytorch_lightning as pl
from hydra import compose, initialize_config_module

from tmaps.commands.train import build_datamodule, build_module, instantiate_list
from tmaps.training.resolvers import register_resolvers

QUICKSTART_TRAIN = 3000


class EpochTimer(pl.Callback):
    """Seconds from each training epoch's start to the next one's (the last to the end of fit)."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.seconds: list[float] = []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._lap()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._lap()

    def _lap(self) -> None:
        now = time.perf_counter()
        if self.starts:
            self.seconds.append(now - self.starts[-1])
        self.starts.append(now)


def epoch_seconds(callbacks: str, root: Path, n_train: int, epochs: int, overrides: list[str]) -> list[float]:
    register_resolvers()
    with initialize_config_module(config_module="tmaps.conf", version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[
                "experiment=quickstart",
                f"callbacks={callbacks}",
                "logger=none",
                f"paths.data_dir={root / 'data'}",
                f"paths.output_dir={root / callbacks}",
                f"data.source.n_utterances.train={n_train}",
                f"trainer.max_epochs={epochs}",
                "trainer.enable_progress_bar=false",
                *overrides,
            ],
        )
    pl.seed_everything(cfg.seed)
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule)
    datamodule.output_stride = module.model.stride
    timer = EpochTimer()
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=[*instantiate_list(cfg.get("callbacks")), timer], logger=False)
    trainer.fit(module, datamodule=datamodule)
    return timer.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=300, help="train utterances (the quickstart has 3000)")
    parser.add_argument("--epochs", type=int, default=4, help="a multiple of ActivationProfiles' every_n_epochs (2)")
    arguments, overrides = parser.parse_known_args()
    with tempfile.TemporaryDirectory(prefix="tmaps-callback-overhead-") as root:
        # callbacks=none first also synthesizes the corpus, outside the timed epochs of both runs.
        seconds = {name: epoch_seconds(name, Path(root), arguments.train, arguments.epochs, overrides) for name in ("none", "default")}
    means = {name: sum(values) / len(values) for name, values in seconds.items()}
    for name, values in seconds.items():
        print(f"callbacks={name:<8} epochs (s): {' '.join(f'{value:.1f}' for value in values)}  mean {means[name]:.2f}")
    cost = means["default"] - means["none"]
    quickstart_epoch = means["none"] * QUICKSTART_TRAIN / arguments.train
    print(f"callbacks cost {cost:.2f} s per epoch; ratio on {arguments.train} train utterances {means['default'] / means['none']:.3f}")
    print(f"projected quickstart epoch ({QUICKSTART_TRAIN} utterances, ~{quickstart_epoch:.0f} s): default/none ratio {1 + cost / quickstart_epoch:.3f}")


if __name__ == "__main__":
    main()

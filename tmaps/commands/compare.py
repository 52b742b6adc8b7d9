"""What ``tmaps-compare first=A.ckpt second=B.ckpt`` does: how far each layer of B moved from A.

For a transfer run, A is the source checkpoint (e.g. English) and B the adapted one (German).
When the alphabets differ, the output layer is compared on the rows of the classes both have
(the blank and the shared characters).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import hydra
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from tmaps.checkpoint import load_checkpoint
from tmaps.commands.wrapper import task_wrapper
from tmaps.transfer.compare import compare_checkpoints


def compare(first_path: str | os.PathLike, second_path: str | os.PathLike, csv: str | os.PathLike | None = None) -> pd.DataFrame:
    """Load both checkpoints, print the change table of the second against the first, optionally write it as CSV.

    Raises:
        FileNotFoundError: a checkpoint does not exist.
        ValueError: a checkpoint cannot be read, or the two are different models.
    """
    first, second = load_checkpoint(first_path), load_checkpoint(second_path)
    table = compare_checkpoints(first, second)
    print(f"A = {first.path} (alphabet {first.alphabet.chars!r}, step {first.global_step})")
    print(f"B = {second.path} (alphabet {second.alphabet.chars!r}, step {second.global_step})")
    if first.alphabet != second.alphabet:
        print("head: compared on the blank and the characters both alphabets have")
    print(table.to_string(index=False, float_format=lambda value: f"{value:.4f}"))
    if csv:
        table.to_csv(csv, index=False)
    return table


CHECKPOINT_KEYS = ("first", "second")
# Hydra options that take a value of their own (which is then no bare checkpoint path).
VALUED_OPTIONS = ("--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd", "--info", "--experimental-rerun")


def overrides(arguments: Sequence[str]) -> list[str]:
    """``arguments`` with the bare checkpoint paths of the short form named ``first=`` and ``second=``."""
    named = list(arguments)
    bare = [
        index
        for index, argument in enumerate(named)
        if "=" not in argument and not argument.startswith(("-", "~", "+")) and (index == 0 or named[index - 1] not in VALUED_OPTIONS)
    ]
    if len(bare) > len(CHECKPOINT_KEYS):
        sys.exit(f"tmaps-compare: takes two checkpoints, got {[named[index] for index in bare]}")
    for key, index in zip(CHECKPOINT_KEYS, bare):
        named[index] = f"{key}={named[index]}"
    return named


@hydra.main(version_base="1.3", config_path="pkg://tmaps.conf", config_name="compare")
@task_wrapper("tmaps-compare")
def main(cfg: DictConfig) -> None:
    """``tmaps-compare first=A.ckpt second=B.ckpt [csv=table.csv]``: how far each layer of B moved from A."""
    if any(OmegaConf.is_missing(cfg, key) for key in CHECKPOINT_KEYS):
        raise ValueError("needs two checkpoints: tmaps-compare first=A.ckpt second=B.ckpt (or tmaps-compare A.ckpt B.ckpt)")
    compare(cfg.first, cfg.second, csv=cfg.csv)


def run() -> None:
    """The console script: ``tmaps-compare A.ckpt B.ckpt`` names its bare checkpoint paths ``first=`` and ``second=``."""
    sys.argv[1:] = overrides(sys.argv[1:])
    main()


if __name__ == "__main__":
    run()

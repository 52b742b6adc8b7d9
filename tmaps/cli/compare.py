"""``tmaps-compare first=A.ckpt second=B.ckpt [csv=table.csv]``: how far each layer of B moved from A.

The short form ``tmaps-compare A.ckpt B.ckpt`` still works: the bare arguments become
``first=`` and ``second=``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import hydra
from omegaconf import DictConfig, OmegaConf

from tmaps.commands.compare import compare

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
def run(cfg: DictConfig) -> None:
    if any(OmegaConf.is_missing(cfg, key) for key in CHECKPOINT_KEYS):
        sys.exit("tmaps-compare: needs two checkpoints: tmaps-compare first=A.ckpt second=B.ckpt (or tmaps-compare A.ckpt B.ckpt)")
    try:
        compare(cfg.first, cfg.second, csv=cfg.csv)
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"tmaps-compare: {error}")


def main() -> None:
    sys.argv[1:] = overrides(sys.argv[1:])
    run()


if __name__ == "__main__":
    main()

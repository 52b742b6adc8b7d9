"""Thin Hydra entry points (``tmaps-train``, ...), and the resolvers their configs use."""

from pathlib import Path

from omegaconf import OmegaConf

from tmaps.training.precision import cpu_precision


def new_folder(path: str) -> str:
    """Create the folder ``path`` and return it; if it exists, create ``path_2``, ``path_3``, ... instead.

    ``conf/hydra/default.yaml`` names run folders by the second they start in: runs started in
    the same second would share one. ``mkdir`` either creates a folder or fails, on a shared
    file system too, so every run gets its own.
    """
    candidate, number = Path(path), 1
    while True:
        try:
            candidate.mkdir(parents=True)
            return str(candidate)
        except FileExistsError:
            number += 1
            candidate = Path(f"{path}_{number}")


# Cached, so that every reading of the run folder (and every job of a sweep) gets the same one.
OmegaConf.register_new_resolver("new_folder", new_folder, use_cache=True, replace=True)
# conf/trainer/cpu.yaml's precision: every command that builds a Trainer (tmaps-eval too) needs it.
OmegaConf.register_new_resolver("cpu_precision", cpu_precision, replace=True)

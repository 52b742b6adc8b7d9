"""The OmegaConf resolvers of tmaps' configs; :func:`register_resolvers` registers them.

Every command registers them as its entry point is defined (:func:`tmaps.commands.wrapper.task_wrapper`);
code that composes a config itself (``hydra.compose``) calls :func:`register_resolvers` first.

- ``new_folder`` (conf/hydra/default.yaml): a run folder of its own for every run;
- ``wandb_group`` (conf/logger/wandb.yaml): one W&B group per sweep;
- ``cpu_precision`` (conf/trainer/cpu.yaml): bf16-mixed where the CPU computes bf16 natively.
"""

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
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


def wandb_group(task_name: str) -> str:
    """The W&B group of a run (``${wandb_group:${task_name}}`` in conf/logger/wandb.yaml).

    ``task_name`` for a single run; ``<task_name>-<sweep folder name>`` in a multirun, so that
    the runs of one sweep share a group and the runs of two sweeps never do.
    """
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return f"{task_name}-{Path(HydraConfig.get().sweep.dir).name}"
    return task_name


def register_resolvers() -> None:
    """Register ``new_folder``, ``wandb_group`` and ``cpu_precision`` with OmegaConf; calling it again changes nothing."""
    # new_folder is cached, so that every reading of the run folder (and every job of a sweep) gets the same one.
    OmegaConf.register_new_resolver("new_folder", new_folder, use_cache=True, replace=True)
    OmegaConf.register_new_resolver("wandb_group", wandb_group, replace=True)
    OmegaConf.register_new_resolver("cpu_precision", cpu_precision, replace=True)

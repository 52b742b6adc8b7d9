"""Type checks of a composed ``tmaps-train`` config, before anything runs.

Each config node is checked against the annotations of what it is passed to: ``trainer`` and
every ``_target_`` of ``checkpoints``, ``callbacks`` and ``logger`` against their constructors,
``data`` against :class:`~tmaps.data.SpeechDataModule`, ``model`` against
the architecture that ``model.arch`` names (:data:`~tmaps.models.ARCHITECTURES`), ``optim`` against :class:`~tmaps.training.module.OptimConfig`
and ``transfer`` against :class:`~tmaps.transfer.TransferConfig`, each by
:func:`tmaps.config_types.check_values`. Without this, ``trainer.max_epochs=abc`` is
ignored under ``fast_dev_run`` and otherwise fails deep inside Lightning without naming the key.
"""

from __future__ import annotations

from collections.abc import Mapping

import hydra
from omegaconf import DictConfig, OmegaConf

from tmaps.config_types import ConfigTypeError, check_values
from tmaps.data import SpeechDataModule
from tmaps.models import ARCHITECTURES, model_config
from tmaps.training.module import OptimConfig
from tmaps.transfer import TransferConfig

# Set by the code from the data, not by the config.
MODEL_ARGUMENTS_FROM_DATA = ("n_features", "n_classes")


def check_config_types(cfg: DictConfig) -> None:
    """Raise ``ConfigTypeError`` listing every ``key=value`` whose type does not fit where it goes."""
    config = OmegaConf.to_container(cfg, resolve=True)
    problems = check_values(config["trainer"], hydra.utils.get_class(config["trainer"]["_target_"]), "trainer")
    for group in ("checkpoints", "callbacks", "logger"):
        for name, node in (config.get(group) or {}).items():
            if isinstance(node, Mapping) and "_target_" in node:
                problems += check_values(node, hydra.utils.get_object(node["_target_"]), f"{group}.{name}")
    problems += check_values(config["data"], SpeechDataModule, "data")
    problems += check_model(config["model"])
    problems += check_values(config["optim"], OptimConfig, "optim")
    if config.get("transfer"):
        problems += check_values(config["transfer"], TransferConfig, "transfer")
    if problems:
        raise ConfigTypeError("config values of the wrong type or unknown keys:\n  " + "\n  ".join(problems))


def check_model(model: Mapping) -> list[str]:
    """The ``model`` config checked against the constructor of the architecture that ``model.arch`` names."""
    arguments = model_config(model)
    arch = arguments.pop("arch")
    if arch not in ARCHITECTURES:
        return [f"model.arch={arch!r}: expected one of {sorted(ARCHITECTURES)}"]
    return check_values(arguments, ARCHITECTURES[arch], "model", skip=MODEL_ARGUMENTS_FROM_DATA)

"""``tmaps-study <name> [report]``: run the study ``tmaps.studies.<name>`` with the config ``conf/study/<name>.yaml``, or rebuild its report.

``tmaps-study transfer`` trains every run of the study that has no record yet (a rerun resumes);
``tmaps-study transfer report`` rebuilds the study's tables, figures and claim estimates from its
committed records alone. Overrides follow the bare words, e.g. ``tmaps-study transfer seeds=[0]``.
A study module provides ``run(study: dict)`` and, where it has one, ``report(study: dict)``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from tmaps.commands.wrapper import task_wrapper

ACTIONS = ("run", "report")


def study_arguments(arguments: Sequence[str]) -> list[str]:
    """``<name> [action] overrides...`` as Hydra overrides: ``overrides... study=<name> [action=<action>]``.

    Hydra takes only ``key=value`` overrides and flags, so the bare words become overrides; they
    go last, after any flag such as ``-m``, so that Hydra's parser reads them with the others.
    """
    arguments = list(arguments)
    words = []
    while arguments and len(words) < 2 and "=" not in arguments[0] and not arguments[0].startswith("-"):
        words.append(arguments.pop(0))
    named = [f"{key}={word}" for key, word in zip(("study", "action"), words)]
    return [*arguments, *named]


def run_study(name: str, action: str, study: dict) -> object:
    """Call ``tmaps.studies.<name>.<action>(study)``.

    Raises:
        ValueError: the action is unknown, or the study module does not provide it.
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; use one of {list(ACTIONS)} (tmaps-study {name} report)")
    module = importlib.import_module(f"tmaps.studies.{name}")
    function = getattr(module, action, None)
    if function is None:
        raise ValueError(f"study {name!r} has no {action!r} (tmaps.studies.{name} provides no {action}())")
    return function(study)


@hydra.main(version_base="1.3", config_path="pkg://tmaps.conf", config_name="study")
@task_wrapper("tmaps-study")
def main(cfg: DictConfig) -> None:
    run_study(HydraConfig.get().runtime.choices["study"], cfg.action, OmegaConf.to_container(cfg, resolve=True))


def run() -> None:
    """The console script ``tmaps-study``: bare words (the study's name, ``report``) become overrides."""
    sys.argv[1:] = study_arguments(sys.argv[1:])
    main()


def transfer_study_alias() -> None:
    """``tmaps-transfer-study``, kept for one release: ``tmaps-study transfer`` with the same overrides."""
    print("tmaps-transfer-study is deprecated and goes in the next release: use tmaps-study transfer (same overrides)", file=sys.stderr, flush=True)
    sys.argv[1:] = study_arguments(["transfer", *sys.argv[1:]])
    main()


if __name__ == "__main__":
    run()

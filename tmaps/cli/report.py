"""``tmaps-report RUN [RUN ...]`` or ``tmaps-report <study folder>``: one offline page of runs side by side (:mod:`tmaps.commands.report`)."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from tmaps.commands.report import bare_runs_argv, write_report


@hydra.main(version_base="1.3", config_path="pkg://tmaps.conf", config_name="report")
def main(cfg: DictConfig) -> None:
    runs = OmegaConf.to_container(cfg.runs) if OmegaConf.is_list(cfg.runs) else [cfg.runs]
    try:
        path = write_report(runs, cfg.output, cfg.max_frames)
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"tmaps-report: {error}")
    print(f"report: {path}")


def run() -> None:
    """The console script: the leading arguments without ``=`` are run folders (Hydra would reject them)."""
    sys.argv[1:] = bare_runs_argv(sys.argv[1:])
    main()


if __name__ == "__main__":
    run()

"""``tmaps-report <run dir>``: the run's metric curves, maps, tables and config in one offline ``report.html``."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from tmaps.commands.report import write_report


@hydra.main(version_base="1.3", config_path="pkg://tmaps.conf", config_name="report")
def main(cfg: DictConfig) -> None:
    try:
        path = write_report(cfg.run_dir, cfg.output)
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"tmaps-report: {error}")
    print(f"report: {path}")


def run() -> None:
    """The console script: a first argument without ``=`` is the run folder."""
    if len(sys.argv) > 1 and "=" not in sys.argv[1] and not sys.argv[1].startswith("-"):
        sys.argv[1] = f"run_dir={sys.argv[1]}"
    main()


if __name__ == "__main__":
    run()

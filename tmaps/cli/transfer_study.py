"""``python -m tmaps.cli.transfer_study``: the English -> German transfer study of ``conf/transfer_study.yaml``
(see :mod:`tmaps.commands.transfer_study`); resumable, finished runs are skipped."""

import hydra
from omegaconf import DictConfig, OmegaConf

from tmaps.commands.transfer_study import run_study


@hydra.main(version_base="1.3", config_path="pkg://tmaps.conf", config_name="transfer_study")
def main(cfg: DictConfig) -> None:
    run_study(OmegaConf.to_container(cfg, resolve=True))


if __name__ == "__main__":
    main()

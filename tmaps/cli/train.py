"""``tmaps-train``: train a speech recogniser from the Hydra config in ``conf/train.yaml``."""

import hydra
from omegaconf import DictConfig

from tmaps.commands.train import train


@hydra.main(version_base="1.3", config_path="pkg://tmaps.conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return train(cfg)


if __name__ == "__main__":
    main()

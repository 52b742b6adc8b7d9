"""``tmaps-synth``: synthesize the corpus of ``data.source`` (``conf/synth.yaml``) under ``data.root``."""

import hydra
from omegaconf import DictConfig

from tmaps.commands.synth import synthesize


@hydra.main(version_base="1.3", config_path="pkg://tmaps.conf", config_name="synth")
def main(cfg: DictConfig) -> None:
    synthesize(cfg)


if __name__ == "__main__":
    main()

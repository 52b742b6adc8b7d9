"""``tmaps-eval ckpt_path=... data=...``: WER and CER of a checkpoint on a corpus' test splits."""

import hydra
from omegaconf import DictConfig

from tmaps.commands.eval import evaluate


@hydra.main(version_base="1.3", config_path="pkg://tmaps.conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()

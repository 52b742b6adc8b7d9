"""``tmaps-export ckpt_path=...``: ONNX, ``torch.export`` program and plain state dict of a checkpoint (see conf/export.yaml)."""

import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from tmaps.commands.export import export


@hydra.main(version_base="1.3", config_path="pkg://tmaps.conf", config_name="export")
def main(cfg: DictConfig) -> None:
    try:
        export(OmegaConf.to_container(cfg, resolve=True))
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"tmaps-export: {error}")


if __name__ == "__main__":
    main()

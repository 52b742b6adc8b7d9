"""``tmaps-maps profiles=path.npz layouts=[grid,som,pca,umap] layers=[...]``: maps and layout quality of a profiles file."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from tmaps.commands.maps import maps_from_config, markdown


@hydra.main(version_base="1.3", config_path="pkg://tmaps.conf", config_name="maps")
def main(cfg: DictConfig) -> None:
    options = OmegaConf.to_container(cfg, resolve=True)
    try:
        table = maps_from_config(options)
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"tmaps-maps: {error}")
    print(f"maps, coordinates and quality of {options['profiles']} in {options['output_dir']}")
    print(markdown(table))


if __name__ == "__main__":
    main()

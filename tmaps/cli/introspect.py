"""``tmaps-introspect ckpt_path=... data=... layers=[...] groups=phoneme``: activation profiles of a checkpoint, clustered and drawn."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from tmaps.commands.introspect import introspect


@hydra.main(version_base="1.3", config_path="pkg://tmaps.conf", config_name="introspect")
def main(cfg: DictConfig) -> None:
    try:
        result = introspect(cfg)
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"tmaps-introspect: {error}")
    profiles = result.profiles
    print(f"{profiles.info['kind']}s of {profiles.info['checkpoint']} by {profiles.info['grouping']}: {len(profiles.groups)} groups, "
          f"{profiles.info['utterances']} utterances of {profiles.info['split']}")
    if profiles.empty_groups:
        print(f"groups without frames (left out): {profiles.empty_groups}")
    print(f"profiles: {result.profiles_path}; figures: {cfg.figures_dir}")
    print(result.summary.to_string(index=False, float_format=lambda value: f"{value:.3f}"))


if __name__ == "__main__":
    main()

"""``tmaps-transcribe ckpt_path=... inputs=[a.wav,folder/]``: transcripts of audio files (see conf/transcribe.yaml)."""

import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from tmaps.commands.transcribe import transcribe


@hydra.main(version_base="1.3", config_path="pkg://tmaps.conf", config_name="transcribe")
def main(cfg: DictConfig) -> None:
    options = OmegaConf.to_container(cfg, resolve=True)
    try:
        transcribe({**options, "work_dir": cfg.paths.output_dir})
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"tmaps-transcribe: {error}")


if __name__ == "__main__":
    main()

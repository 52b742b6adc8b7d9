"""What ``tmaps-synth`` does: synthesize the corpus of ``data.source`` (``conf/synth.yaml``) under ``data.root``."""

from __future__ import annotations

import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from tmaps.commands.wrapper import task_wrapper
from tmaps.data.manifest import SPLITS, read_manifest
from tmaps.data.synth import SynthConfig, corpus_dir, synthesize_corpus


def synthesize(cfg: DictConfig) -> Path:
    """Build (or find) the corpus of ``cfg.data.source``; print its folder, sizes and the time taken."""
    config = SynthConfig.from_mapping(OmegaConf.to_container(cfg.data.source, resolve=True))
    root = Path(cfg.data.root)
    reused = corpus_dir(config, root).is_dir()
    start = time.perf_counter()
    folder = synthesize_corpus(config, root, num_workers=cfg.num_workers)
    seconds = time.perf_counter() - start
    print(folder)
    audio_seconds = 0.0
    for split in SPLITS:
        durations = [record["duration"] for record in read_manifest(folder / f"{split}.jsonl")]
        audio_seconds += sum(durations)
        print(f"{split}: {len(durations)} utterances, {sum(durations) / 3600:.2f} h")
    if reused:
        print(f"reused the corpus synthesized before ({seconds:.1f} s)")
    else:
        print(f"synthesized in {seconds:.1f} s, {audio_seconds / seconds:.0f}x real time")
    return folder


@hydra.main(version_base="1.3", config_path="pkg://tmaps.conf", config_name="synth")
@task_wrapper("tmaps-synth")
def main(cfg: DictConfig) -> None:
    """``tmaps-synth``: synthesize the corpus of ``data.source`` (``conf/synth.yaml``) under ``data.root``."""
    synthesize(cfg)


if __name__ == "__main__":
    main()

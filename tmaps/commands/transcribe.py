"""``tmaps-transcribe``: transcripts of audio files and folders with a trained checkpoint."""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from tmaps.checkpoint import load_checkpoint
from tmaps.commands.wrapper import task_wrapper
from tmaps.inference import Transcriber, audio_files, build_decoder
from tmaps.progress import progress_bar, set_progress_bars

log = logging.getLogger(__name__)

OUTPUT_FORMATS = (".jsonl", ".csv")


def transcribe(config: Mapping) -> list[dict]:
    """Transcribe ``config["inputs"]`` and print or write one result per file.

    Bad inputs (an undecodable or empty file, a folder without audio, a missing path) are
    reported by name on stderr and in the log; the other files are still transcribed. Each
    result is written as soon as it is made, so an interruption keeps what was done.

    Returns the results (``{"file", "text", "duration"}``, with ``words`` and ``characters``
    when ``timings``) and raises ``SystemExit(1)`` after the run if any input failed.
    """
    inputs = config["inputs"]
    inputs = [inputs] if isinstance(inputs, str) else list(inputs)
    output = Path(config["output"]) if config.get("output") else None
    if output is not None and output.suffix not in OUTPUT_FORMATS:
        raise ValueError(f"output {output} must end in one of {OUTPUT_FORMATS}")
    checkpoint = load_checkpoint(config["ckpt_path"])
    decoder = build_decoder(config.get("decoder"), checkpoint.alphabet, work_dir=Path(config.get("work_dir") or "."))
    transcriber = Transcriber(
        checkpoint.model, checkpoint.alphabet, checkpoint.features, decoder, chunk_s=config.get("chunk_s"), device=config.get("device", "cpu")
    )
    set_progress_bars(config.get("progress"))
    files, problems = audio_files(inputs)
    results = []
    with _writer(output, timings=bool(config.get("timings"))) as write:
        for path in progress_bar(files, "transcribing"):
            try:
                result = transcriber.transcribe_file(path, timings=bool(config.get("timings")))
            except ValueError as error:
                problems.append(str(error))
                continue
            write(result)
            results.append(result)
    for problem in problems:
        log.error("skipped %s", problem)
        print(f"tmaps-transcribe: skipped {problem}", file=sys.stderr)
    if output is not None:
        print(f"{len(results)} transcript(s) in {output}")
    if problems:
        raise SystemExit(1)
    return results


@contextlib.contextmanager
def _writer(output: Path | None, timings: bool) -> Iterator[Callable[[dict], None]]:
    """``write(result)``: a printed line, a JSON line or a CSV row (word timings as JSON), flushed at once."""
    if output is None:
        yield lambda result: print(f"{result['file']}\t{result['text']}", flush=True)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w", encoding="utf-8", newline="") as stream:
        if output.suffix == ".jsonl":

            def write(result: dict) -> None:
                stream.write(json.dumps(result, ensure_ascii=False) + "\n")
                stream.flush()

        else:
            rows = csv.DictWriter(stream, fieldnames=["file", "duration", "text", *(["words"] if timings else [])], extrasaction="ignore")
            rows.writeheader()

            def write(result: dict) -> None:
                rows.writerow({**result, **({"words": json.dumps(result["words"], ensure_ascii=False)} if timings else {})})
                stream.flush()

        yield write


@hydra.main(version_base="1.3", config_path="pkg://tmaps.conf", config_name="transcribe")
@task_wrapper("tmaps-transcribe")
def main(cfg: DictConfig) -> None:
    """``tmaps-transcribe ckpt_path=... inputs=[a.wav,folder/]``: transcripts of audio files (see conf/transcribe.yaml)."""
    options = OmegaConf.to_container(cfg, resolve=True)
    transcribe({**options, "work_dir": cfg.paths.output_dir})


if __name__ == "__main__":
    main()

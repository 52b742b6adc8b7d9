"""A study's unit of work: one training run (a config and a seed) and the record it leaves.

A record is one JSON file under ``docs/results/<study>/runs/<run id>.json``, written
atomically, that holds everything a report needs without the checkpoint:

- ``settings`` and ``settings_hash``: what defines the run (the overrides, the seed, the hashes
  of the source checkpoint and corpus where there are any). A study reuses a record only when
  its settings match, and otherwise names what changed (:class:`SettingsChanged`);
- ``provenance``: git commit and whether the tree was dirty, CPU model and its bf16/AVX flags,
  threads, precision, torch version, wall and training seconds;
- ``curve``: every validation as ``{"step", "dev_cer", "dev_loss"}``;
- ``test``: per test split the CER and WER and every utterance's character and word edit
  counts and lengths, so that confidence intervals can be computed from the record alone;
- ``metrics``: what the study measures on the trained model.

Records are committed as runs finish, so a study of many hours resumes from them on any
machine; checkpoints stay out of git and are named by content hash.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pandas as pd
import torch
import yaml

from tmaps.processes import die_with_parent

REPO_ROOT = Path(__file__).resolve().parents[2]
RECORD_VERSION = 1
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


class RunFolderInUse(OSError):
    """Another process holds the lock of a run folder (:func:`locked`)."""


class RunFailed(ChildProcessError):
    """A study's training run exited with an error (:func:`run_child`); the message names its log."""


class SettingsChanged(ValueError):
    """A record exists for a run id, but its settings differ from the ones asked for."""


def canonical_json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def settings_hash(settings: Mapping) -> str:
    """A short content hash of a run's settings (keys sorted, so the order of a mapping does not count)."""
    return hashlib.sha256(canonical_json(settings).encode()).hexdigest()[:16]


def file_hash(path: str | Path) -> str:
    """``sha256:<hex>`` of a file's bytes: how a record names a checkpoint, independent of where it lies."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def checkpoint_reference(path: str | Path, start: str | Path = REPO_ROOT) -> dict:
    """How results name a checkpoint: ``{"path": relative to start (else its file name), "hash": "sha256:<hex>"}``; a file
    that is not there keeps its name, with ``hash`` saying it is unknown."""
    known = Path(path).is_file()
    return {"path": relative_path(path, start), "hash": file_hash(path) if known else "unknown: the checkpoint was not found"}


def relative_path(path: str | Path, start: str | Path = REPO_ROOT) -> str:
    """``path`` relative to ``start`` where it lies below it, else its file name only: no machine path goes into a record."""
    path = Path(path).resolve()
    try:
        return path.relative_to(Path(start).resolve()).as_posix()
    except ValueError:
        return path.name


def without_machine_paths(value: object, run_dir: Path) -> object:
    """``value`` (a config) with every absolute path made relative to ``run_dir`` or the repository, else cut to ``<elsewhere>/<name>``."""
    if isinstance(value, Mapping):
        return {key: without_machine_paths(item, run_dir) for key, item in value.items()}
    if isinstance(value, list):
        return [without_machine_paths(item, run_dir) for item in value]
    if not (isinstance(value, str) and value.startswith("/")):
        return value
    for start, prefix in ((run_dir, "<run>"), (REPO_ROOT, "<repo>")):
        with contextlib.suppress(ValueError):
            return f"{prefix}/{Path(value).resolve().relative_to(Path(start).resolve()).as_posix()}".rstrip("/.")
    return f"<elsewhere>/{Path(value).name}"


def cpu_description() -> dict:
    model, flags = platform.processor() or platform.machine(), set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("", platform.machine(), platform.processor()):
                model = line.split(":", 1)[1].strip()
            elif line.startswith(("flags", "Features")):
                flags = set(line.split(":", 1)[1].split())
    return {"model": model, "flags": [flag for flag in CPU_FLAGS if flag in flags], "cores": os.cpu_count()}


def git_state(repo: Path = REPO_ROOT) -> dict:
    """The commit of ``repo`` and whether its tracked files differ from it (``None`` outside a git checkout)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(dirty.stdout.strip())}


def provenance(precision: str | None = None) -> dict:
    """Where and with what a run was made (not part of its settings: a record made elsewhere still counts)."""
    return {
        **git_state(),
        "cpu": cpu_description(),
        "threads": torch.get_num_threads(),
        "precision": precision,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def write_text_atomically(path: Path, text: str) -> None:
    """Write ``text`` beside ``path``, then rename: a reader never sees half a file, and a failed write keeps the old one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def write_json_atomically(path: Path, value: object) -> None:
    """Write ``value`` as JSON (one space of indent, keys in their given order), atomically (:func:`write_text_atomically`)."""
    write_text_atomically(path, json.dumps(value, indent=1, sort_keys=False, default=str) + "\n")


class RecordStore:
    """The committed records of one study: ``<folder>/<run id>.json``."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def path(self, run_id: str) -> Path:
        return self.folder / f"{run_id}.json"

    def load(self, run_id: str, settings: Mapping) -> dict | None:
        """The record of ``run_id`` if one exists with these ``settings``; ``None`` if none exists.

        Raises:
            SettingsChanged: a record exists with other settings; the message names each key that differs.
            ValueError: the record is not valid JSON (its file is named).
        """
        path = self.path(run_id)
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"record {path} is not valid JSON ({error}); move it away to train the run again") from error
        if record.get("settings_hash") != settings_hash(settings):
            changed = differing_keys(record.get("settings", {}), settings)
            raise SettingsChanged(
                f"record {path} was made with other settings ({'; '.join(changed)}); "
                "delete or move it to train the run anew, or give the study another name"
            )
        return record

    def save(self, record: dict) -> Path:
        path = self.path(record["run_id"])
        write_json_atomically(path, record)
        return path

    def supersede(self, run_id: str) -> Path:
        """Move the record of ``run_id`` to ``superseded/<run id>-<its settings hash>.json``, out of the study but kept; return where."""
        path = self.path(run_id)
        record = json.loads(path.read_text(encoding="utf-8"))
        moved = self.folder / "superseded" / f"{run_id}-{record.get('settings_hash', 'unknown')}.json"
        moved.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, moved)
        return moved

    def records(self) -> list[dict]:
        """Every record of the study (not the superseded ones), by run id.

        Raises:
            ValueError: a record is not valid JSON (its file is named).
        """
        records = []
        for path in sorted(self.folder.glob("*.json")):
            try:
                records.append(json.loads(path.read_text(encoding="utf-8")))
            except json.JSONDecodeError as error:
                raise ValueError(f"record {path} is not valid JSON ({error})") from error
        return records


def differing_keys(old: Mapping, new: Mapping, prefix: str = "") -> list[str]:
    """``key: old -> new`` for every (nested) key whose value differs between two settings mappings."""
    lines = []
    for key in sorted(set(old) | set(new), key=str):
        before, after = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(before, Mapping) and isinstance(after, Mapping):
            lines += differing_keys(before, after, f"{prefix}{key}.")
        elif canonical_json(before) != canonical_json(after):
            lines.append(f"{prefix}{key}: {before!r} -> {after!r}")
    return lines


def new_record(study: str, run_id: str, settings: Mapping, precision: str | None = None) -> dict:
    return {
        "version": RECORD_VERSION,
        "study": study,
        "run_id": run_id,
        "settings": dict(settings),
        "settings_hash": settings_hash(settings),
        "provenance": provenance(precision),
    }


@contextlib.contextmanager
def locked(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``run_dir`` while a run writes into it; a second study on it is refused, naming the folder."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    # Beside the folder, not in it: a run that starts over may clear its folder while holding the lock.
    with open(run_dir.parent / f"{run_dir.name}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            raise RunFolderInUse(f"run folder {run_dir} is in use by another process (a study or run is writing into it)") from error
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _own_group_dying_with_parent() -> None:  # runs in the child between fork and exec
    os.setpgrp()
    die_with_parent()


def run_child(command: Sequence[str], log_path: Path) -> float:
    """Run ``command`` as a child that dies with this process; return its wall seconds.

    The child gets its own process group and a parent-death signal, so that neither ``kill -9``
    of the study nor Ctrl-C leaves an orphan writing into the run folder. Its console goes to
    ``log_path``.

    Raises:
        RunFailed: the child failed; the message names the log and its last lines.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as output:
        child = subprocess.Popen(list(command), stdout=output, stderr=subprocess.STDOUT, preexec_fn=_own_group_dying_with_parent)
        try:
            status = child.wait()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            raise
    if status != 0:
        tail = "\n".join(log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-15:])
        raise RunFailed(f"training run failed with exit status {status}; its log is {log_path}:\n{tail}")
    return time.perf_counter() - started


def train_run(overrides: Sequence[str], log_path: Path) -> float:
    """Run ``tmaps-train`` with ``overrides`` as a child that dies with this process (:func:`run_child`); return its wall seconds."""
    return run_child([sys.executable, "-m", "tmaps.commands.train", *overrides], log_path)


def composed_train_config(overrides: Sequence[str]):
    """The ``tmaps-train`` config that ``overrides`` compose (a ``DictConfig``, unresolved), inside a Hydra app or outside one."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from tmaps.training.resolvers import register_resolvers

    register_resolvers()
    if GlobalHydra.instance().is_initialized():  # inside tmaps-study's own Hydra app, whose search path holds tmaps.conf
        return compose(config_name="train", overrides=list(overrides))
    with initialize_config_module(config_module="tmaps.conf", version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def csv_log(run_dir: Path) -> Path:
    """The newest ``csv/version_*`` folder of a run trained with ``logger=csv`` (a failed first attempt leaves older ones)."""
    versions = sorted(run_dir.glob("csv/version_*"), key=lambda path: int(path.name.split("_")[1]))
    if not versions:
        raise FileNotFoundError(f"run folder {run_dir} has no csv/version_*/: was it trained with logger=csv?")
    return versions[-1]


def read_config(run_dir: Path) -> dict:
    """The run's resolved config, as the CSV logger keeps it (``hparams.yaml``)."""
    return yaml.safe_load((csv_log(run_dir) / "hparams.yaml").read_text(encoding="utf-8"))


def read_curve(run_dir: Path) -> list[dict]:
    """Every validation of a run's CSV log (:func:`csv_log`) as ``{"step", "dev_cer", "dev_loss", "train_seconds"}``.

    ``step`` is the number of optimizer steps taken, as checkpoints count it: Lightning logs a
    validation that follows step ``n`` at step ``n - 1``. ``train_seconds`` is the
    :class:`~tmaps.callbacks.TrainTime` callback's ``time/train_s`` where the run had it, else ``None``.
    """
    table = pd.read_csv(csv_log(run_dir) / "metrics.csv")
    rows = table.dropna(subset=["val/cer"]).groupby("step").last()

    def value(row: pd.Series, column: str) -> float | None:
        return float(row[column]) if column in row and pd.notna(row[column]) else None

    return [
        {"step": int(step) + 1, "dev_cer": float(row["val/cer"]), "dev_loss": value(row, "val/loss"), "train_seconds": value(row, "time/train_s")}
        for step, row in rows.iterrows()
    ]


def trained_record(study: str, planned: Mapping, overrides: Sequence[str], run_dir: Path, out_dir: Path) -> tuple[dict, Path, dict]:
    """Train a planned run (``run_id``, ``settings``, ``arm``) into ``run_dir`` with ``overrides`` and begin its record.

    The record holds the settings and provenance (with the wall seconds), the arm, the resolved config
    without machine paths, the best-dev checkpoint by hash (relative to ``out_dir``) and the dev curve.
    Returns the record, the best checkpoint and the resolved config, for the study's own measurements.
    """
    wall = train_run([*overrides, f"hydra.run.dir={run_dir}"], run_dir / "console.log")
    best = sorted((run_dir / "checkpoints").glob("best-*.ckpt"))[-1]
    config = read_config(run_dir)
    record = new_record(study, planned["run_id"], planned["settings"], precision=config["trainer"]["precision"])
    record |= {"arm": planned["arm"], "config": without_machine_paths(config, run_dir)}
    record["checkpoint"] = checkpoint_reference(best, out_dir)
    record["provenance"]["wall_seconds"] = wall
    record["curve"] = read_curve(run_dir)
    return record, best, config


def checkpoint_test_errors(checkpoint_path: Path, data: Mapping) -> dict:
    """:func:`utterance_errors` of a checkpoint on every test split of the corpus of a ``data`` config, by split name."""
    # Imported here: the claims and the reports import this module and must not pull in Lightning to read records.
    from tmaps.data import checkpoint_datamodule
    from tmaps.training.module import ASRModule

    module = ASRModule.from_checkpoint(checkpoint_path).eval()
    datamodule = checkpoint_datamodule(data, module.alphabet, module.hparams.features, checkpoint_path)
    datamodule.output_stride = module.model.stride
    datamodule.prepare_data()
    datamodule.setup("test")
    return {split: utterance_errors(module, module.decode, loader) for split, loader in datamodule.test_loaders().items()}


@torch.no_grad()
def utterance_errors(model_fn, decode, loader) -> dict:
    """Greedy transcripts of every utterance of ``loader`` against its reference, as edit counts.

    Args:
        model_fn: ``(features, lengths) -> (log_probs, output_lengths)``, in eval mode.
        decode: ``(log_probs, output_lengths) -> list[str]``.
        loader: batches of :class:`~tmaps.data.SpeechDataModule` (``records`` hold ``id`` and ``text``).

    Returns:
        ``{"cer", "wer", "utterances": [{"id", "char_edits", "chars", "word_edits", "words"}, ...]}``;
        CER and WER are pooled (total edits over total reference length), as torchmetrics computes them.
    """
    from torchaudio.functional import edit_distance

    rows = []
    for batch in loader:
        log_probs, output_lengths = model_fn(batch["features"], batch["feature_lengths"])
        for record, hypothesis in zip(batch["records"], decode(log_probs, output_lengths)):
            reference = record["text"]
            rows.append({
                "id": record["id"],
                "char_edits": edit_distance(reference, hypothesis),
                "chars": len(reference),
                "word_edits": edit_distance(reference.split(), hypothesis.split()),
                "words": len(reference.split()),
            })
    chars, words = sum(row["chars"] for row in rows), sum(row["words"] for row in rows)
    return {
        "cer": sum(row["char_edits"] for row in rows) / max(chars, 1),
        "wer": sum(row["word_edits"] for row in rows) / max(words, 1),
        "utterances": rows,
    }

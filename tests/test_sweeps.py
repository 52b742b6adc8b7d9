"""Hydra sweeps of tmaps-train as real subprocesses: basic sweeper with W&B groups, submitit_local, Optuna."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_module
from wandb.proto import wandb_internal_pb2

from tmaps.data import SpeechDataModule
from tmaps.data.manifest import SPLITS

WANDB_HEADER_BYTES, WANDB_BLOCK_BYTES, CHUNK_HEADER_BYTES, CHUNK_FULL, CHUNK_LAST = 7, 32768, 7, 1, 4
TINY_RUN = [
    "model.channels=[16,16,16,16,16,16,16,16,32,32]",
    "data.batching.num_workers=0",
    "data.batching.max_batch_seconds=12",
    "trainer.fast_dev_run=true",
    "callbacks=none",
]


@pytest.fixture(scope="module")
def corpus_overrides(synth_corpus_en: Path, tmp_path_factory) -> list[str]:
    """``data=manifest`` on the tiny corpus, its manifests prepared once so that parallel jobs only read them."""
    splits = {split: f"{split}.jsonl" for split in SPLITS if (synth_corpus_en / f"{split}.jsonl").is_file()}
    data_dir = tmp_path_factory.mktemp("data")
    SpeechDataModule(source={"kind": "manifest", "path": str(synth_corpus_en), "splits": splits}, root=str(data_dir)).prepare_data()
    split_list = ",".join(f"{split}:{name}" for split, name in splits.items())
    return ["data=manifest", f"data.source.path={synth_corpus_en}", f"data.source.splits={{{split_list}}}", f"paths.data_dir={data_dir}"]


def sweep(*overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    environment = {**os.environ, "TMAPS_ROOT": str(cwd), "HYDRA_FULL_ERROR": "1", "WANDB_SILENT": "true"}
    result = subprocess.run(
        [sys.executable, "-m", "tmaps.commands.train", "-m", *overrides, "hydra.sweep.dir=sweep"],
        cwd=cwd, env=environment, capture_output=True, text=True, timeout=600,
    )
    if result.returncode != 0:
        raise AssertionError(f"sweep {overrides} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


def wandb_records(path: Path) -> Iterator[wandb_internal_pb2.Record]:
    """The protobuf records of a ``.wandb`` file: a LevelDB-style log of 32 KiB blocks after a
    7-byte header, each chunk ``(crc32 u32, length u16, type u8)`` then its bytes; a record is
    one FULL chunk or FIRST, MIDDLE..., LAST; block tails shorter than a chunk header are padding."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    position, payload = WANDB_HEADER_BYTES, b""
    while position + CHUNK_HEADER_BYTES <= len(data):
        room = WANDB_BLOCK_BYTES - position % WANDB_BLOCK_BYTES
        if room < CHUNK_HEADER_BYTES:
            position += room
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + CHUNK_HEADER_BYTES])
        payload += data[position + CHUNK_HEADER_BYTES : position + CHUNK_HEADER_BYTES + length]
        position += CHUNK_HEADER_BYTES + length
        if kind in (CHUNK_FULL, CHUNK_LAST):
            yield wandb_internal_pb2.Record.FromString(payload)
            payload = b""


def wandb_runs(job_dir: Path) -> list[dict]:
    """``run_id``, ``group`` and ``finished`` (an exit record, which ``wandb.finish`` writes) of
    every offline W&B run under a job folder."""
    runs = []
    for run_file in sorted((job_dir / "wandb").glob("offline-run-*/run-*.wandb")):
        run = {"finished": False}
        for record in wandb_records(run_file):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run |= {"run_id": record.run.run_id, "group": record.run.run_group}
            run["finished"] |= kind == "exit"
        runs.append(run)
    return runs


def test_a_multirun_gives_one_finished_wandb_run_per_job_in_one_group_per_sweep(corpus_overrides, tmp_path):
    sweep(*corpus_overrides, *TINY_RUN, "topo=weight_similarity", "topo.weight=0.1,1.0", "logger=wandb", cwd=tmp_path)
    runs = [run for job in ("0", "1") for run in wandb_runs(tmp_path / "sweep" / job)]
    assert len(runs) == 2 and runs[0]["run_id"] != runs[1]["run_id"]
    assert runs[0]["group"] == runs[1]["group"] == "train-sweep"
    assert all(run["finished"] for run in runs)
    for job, weight in (("0", 0.1), ("1", 1.0)):
        overrides = yaml.safe_load((tmp_path / "sweep" / job / ".hydra" / "overrides.yaml").read_text())
        assert f"topo.weight={weight}" in overrides


def test_a_submitit_local_sweep_runs_each_job_in_its_own_process(corpus_overrides, tmp_path):
    sweep(*corpus_overrides, *TINY_RUN, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", "seed=1,2", "logger=wandb", cwd=tmp_path)
    runs = [run for job in ("0", "1") for run in wandb_runs(tmp_path / "sweep" / job)]
    assert len(runs) == 2 and runs[0]["run_id"] != runs[1]["run_id"]
    assert runs[0]["group"] == runs[1]["group"] == "train-sweep" and all(run["finished"] for run in runs)
    logs = sorted((tmp_path / "sweep" / ".submitit").glob("*/*_0_log.out"))
    assert len(logs) == 2


@pytest.mark.slow
def test_optuna_search_minimizes_validation_cer(corpus_overrides, tmp_path):
    sweep(
        *corpus_overrides, *TINY_RUN, "hparams_search=optuna", "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.n_startup_trials=2", "logger=none", cwd=tmp_path,
    )
    results = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    assert results["name"] == "optuna"
    assert 0.0 <= results["best_value"] <= 1.5  # a CER: errors over reference characters
    assert set(results["best_params"]) == {"optim.lr", "optim.weight_decay", "model.dropout"}


def compose_with_hydra(*overrides: str):
    with initialize_config_module(config_module="tmaps.conf", version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=True)


def test_the_topo_sweep_is_a_multirun_over_weight_and_layer():
    cfg = compose_with_hydra("experiment=topo_sweep")
    assert cfg.hydra.mode.name == "MULTIRUN" and cfg.topo.loss == "weight_similarity"
    assert cfg.hydra.sweeper.params == {"topo.weight": "0.1,1.0,10.0", "topo.layers": "[conv1],[conv4],[conv7]"}


def test_the_slurm_launcher_runs_one_task_per_gpu():
    launcher = compose_with_hydra("hydra/launcher=slurm").hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert launcher.tasks_per_node == launcher.gpus_per_node

"""trainer=ddp with 2 CPU processes on gloo: training with a topographic loss and the map callbacks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tmaps.callbacks.base import probe_batches
from tmaps.data import SpeechDataModule
from tmaps.data.manifest import SPLITS
from tmaps.introspect import NAP, Profiles
from tmaps.training.module import ASRModule

PROBE = {"n_probe_utterances": 8, "probe_batch_size": 4}  # 2 probe batches: one per rank


@pytest.fixture(scope="module")
def ddp_run(synth_corpus_en: Path, tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("ddp")
    splits = {split: f"{split}.jsonl" for split in SPLITS if (synth_corpus_en / f"{split}.jsonl").is_file()}
    data = {"source": {"kind": "manifest", "path": str(synth_corpus_en), "splits": splits}, "root": str(root / "data")}
    split_list = ",".join(f"{split}:{name}" for split, name in splits.items())
    overrides = [
        "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true",
        "trainer.sync_batchnorm=false",  # SyncBatchNorm runs on GPUs only
        "trainer.max_epochs=2", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1", "test=false",
        "data=manifest", f"data.source.path={synth_corpus_en}", f"data.source.splits={{{split_list}}}", f"paths.data_dir={root / 'data'}",
        "data.batching.num_workers=0", "data.batching.max_batch_seconds=12",
        "model.channels=[16,16,16,16,16,16,16,16,32,32]", "topo=weight_similarity", "topo.layers=[conv2]",
        "logger=csv", "callbacks.activation_profiles.every_n_epochs=1",
        *(f"callbacks.activation_profiles.{key}={value}" for key, value in PROBE.items()),
        "hydra.run.dir=run",
    ]
    environment = {**os.environ, "TMAPS_ROOT": str(root), "HYDRA_FULL_ERROR": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "tmaps.commands.train", *overrides], cwd=root, env=environment, capture_output=True, text=True, timeout=600
    )
    if result.returncode != 0:
        raise AssertionError(f"DDP training failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return root / "run", data


@pytest.mark.slow
def test_ddp_training_with_topo_loss_and_callbacks_writes_every_map(ddp_run):
    run_dir, _ = ddp_run
    figures = run_dir / "figures"
    for key in ("maps__filters__conv2", "maps__activations__conv2", "profiles__map__conv2", "profiles__adjusted_rand"):
        assert len(list((figures / key).glob("step*.png"))) == 2, key  # rank zero alone, once per epoch
    assert (figures / "maps__filters__conv2" / "evolution.gif").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.slow
def test_profile_sums_reduced_across_ranks_equal_one_process_on_the_same_probe_set(ddp_run):
    run_dir, data = ddp_run
    reduced = Profiles.load(sorted((run_dir / "profiles").glob("nap_step*.npz"))[-1])
    model = ASRModule.from_checkpoint(run_dir / "checkpoints" / "last.ckpt").model
    datamodule = SpeechDataModule(**data, batching={"num_workers": 0})
    datamodule.setup("validate")
    probe = probe_batches(datamodule.loader("dev"), PROBE["n_probe_utterances"], PROBE["probe_batch_size"])
    single = NAP(model, model.layer_names).compute(probe, "phoneme")
    assert sorted(single.all_groups) == sorted(reduced.all_groups)  # all_reduce orders labels as the ranks met them
    rows = [reduced.all_groups.index(group) for group in single.all_groups]
    for layer in model.layer_names:
        np.testing.assert_array_equal(single.counts[layer], reduced.counts[layer][rows])
        np.testing.assert_allclose(single.sums[layer], reduced.sums[layer][rows], rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(single.squares[layer], reduced.squares[layer][rows], rtol=1e-6, atol=1e-9)

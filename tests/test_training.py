"""The Hydra app end to end: composition of every group, fast_dev_run, subprocess training, resume, errors."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from tmaps.checkpoint import CheckpointMismatchError, check_compatible, load_checkpoint, read_checkpoint
from tmaps.commands.train import train
from tmaps.data.datamodule import SOURCE_KINDS

CONF = Path(__file__).resolve().parents[1] / "conf"
TINY_CORPUS = [
    "data.source.n_utterances={train:24,dev:6,test:6,test_unseen:6}",
    "data.source.words_per_utterance=[2,4]",
    "data.batching.num_workers=0",
]
TINY_MODEL = ["model.channels=[32,32,32,32,32,32,32,32,64,64]"]


def options(group: str) -> list[str]:
    return sorted(path.stem for path in (CONF / group).glob("*.yaml"))


def compose_train(overrides: list[str], output_dir: Path, data_dir: Path):
    with initialize_config_module(config_module="tmaps.conf", version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[f"paths.output_dir={output_dir}", f"paths.data_dir={data_dir}", *overrides],
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra  # as in a real run, where the task function never sees the hydra node
    return cfg


@pytest.fixture(scope="module")
def data_dir(synth_data_dir) -> Path:
    return synth_data_dir


@pytest.mark.parametrize(
    "overrides",
    [[f"model={name}"] for name in options("model")]
    + [[f"topo={name}"] for name in options("topo")]
    + [[f"logger={name}"] for name in options("logger")]
    + [[f"checkpoints={name}"] for name in options("checkpoints")]
    + [[f"callbacks={name}"] for name in options("callbacks")]
    + [[f"transfer={name}"] for name in options("transfer")]
    + [[f"experiment={name}"] for name in options("experiment")],
    ids=lambda overrides: overrides[0],
)
def test_every_group_option_trains_under_fast_dev_run(overrides, tmp_path, data_dir, trained_run):
    small_model = [] if overrides[0] in ("model=wav2letter", "model=conformer_small") else TINY_MODEL
    cfg = compose_train([*overrides, *TINY_CORPUS, *small_model, "trainer.fast_dev_run=true"], tmp_path, data_dir)
    if cfg.get("transfer") and OmegaConf.is_missing(cfg.transfer, "init_from"):
        cfg.transfer.init_from = str(trained_run / "checkpoints" / "last.ckpt")
    train(cfg)


@pytest.mark.parametrize("trainer", options("trainer"))
@pytest.mark.parametrize("data", options("data"))
def test_trainer_and_data_options_compose(trainer, data, tmp_path, data_dir):
    cfg = compose_train([f"trainer={trainer}", f"data={data}"], tmp_path, data_dir)
    assert cfg.trainer._target_ == "pytorch_lightning.Trainer"
    assert cfg.data.source.kind in SOURCE_KINDS


def run_cli(*arguments: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    environment = {**os.environ, "TMAPS_ROOT": str(cwd), "HYDRA_FULL_ERROR": "0"}
    result = subprocess.run(
        [sys.executable, "-m", *arguments], cwd=cwd, env=environment, capture_output=True, text=True, timeout=600
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{arguments} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, data_dir) -> Path:
    """One real `tmaps-train` subprocess on a tiny corpus with the W&B and CSV loggers."""
    root = tmp_path_factory.mktemp("run")
    run_cli(
        "tmaps.commands.train",
        *TINY_CORPUS,
        *TINY_MODEL,
        f"paths.data_dir={data_dir}",
        "logger=many",
        "data.batching.max_batch_seconds=4",
        "trainer.max_epochs=4",
        "trainer.log_every_n_steps=1",
        "optim.lr=3e-3",
        "optim.warmup_steps=5",
        "hydra.run.dir=run",
        cwd=root,
    )
    return root / "run"


def logged(run_dir: Path) -> list[dict]:
    """The rows of a run's CSV log, empty cells left out."""
    rows = csv.DictReader((run_dir / "csv" / "version_0" / "metrics.csv").open())
    return [{key: value for key, value in row.items() if value} for row in rows]


def epoch_means(rows: list[dict], key: str) -> list[float]:
    """The mean of ``key`` over the steps of each epoch."""
    by_epoch: dict[int, list[float]] = {}
    for row in rows:
        if key in row:
            by_epoch.setdefault(int(row["epoch"]), []).append(float(row[key]))
    return [sum(values) / len(values) for _, values in sorted(by_epoch.items())]


def test_train_subprocess_leaves_wandb_run_checkpoints_and_a_falling_loss(trained_run):
    assert list((trained_run / "wandb").glob("offline-run-*/run-*.wandb"))
    checkpoints = trained_run / "checkpoints"
    assert (checkpoints / "last.ckpt").is_file() and list(checkpoints.glob("best-*.ckpt"))
    # Every epoch trains on the same batches (the duration buckets are fixed), so the mean loss of
    # an epoch compares like with like; a single batch's loss depends on which batch it is. With
    # 7 steps an epoch the last epoch's mean was 0.59 of the first's; with optim.lr=0, 1.004.
    means = epoch_means(logged(trained_run), "train/ctc")
    assert len(means) == 4 and means[-1] < 0.8 * means[0], means


def test_test_splits_and_the_best_validation_cer_are_logged_under_keys_of_their_own(trained_run):
    rows = logged(trained_run)
    assert {"test/cer", "test/wer", "test_unseen/cer", "test_unseen/wer", "val/cer_best"} <= {key for row in rows for key in row}
    val_cer = [float(row["val/cer"]) for row in rows if "val/cer" in row]
    best = [float(row["val/cer_best"]) for row in rows if "val/cer_best" in row]
    assert len(val_cer) == 4 and best == pytest.approx([min(val_cer[: epoch + 1]) for epoch in range(4)])


def test_checkpoint_rebuilds_model_alphabet_and_features(trained_run):
    loaded = load_checkpoint(trained_run / "checkpoints" / "last.ckpt")
    assert loaded.alphabet.chars == " 'abcdefghijklmnopqrstuvwxyz"
    assert loaded.features["n_mels"] == loaded.model.n_features
    assert loaded.model.head.out_channels == loaded.alphabet.n_classes


def test_eval_prints_error_rates_of_a_checkpoint(trained_run, data_dir):
    result = run_cli(
        "tmaps.commands.eval",
        f"ckpt_path={trained_run / 'checkpoints' / 'last.ckpt'}",
        *TINY_CORPUS,
        f"paths.data_dir={data_dir}",
        "hydra.run.dir=eval",
        cwd=trained_run.parent,
    )
    assert "test_unseen" in result.stdout and "CER" in result.stdout


def test_resume_from_last_checkpoint_continues_the_global_step(trained_run, tmp_path, data_dir):
    last = trained_run / "checkpoints" / "last.ckpt"
    steps_before = read_checkpoint(last)["global_step"]
    cfg = compose_train(
        [*TINY_CORPUS, *TINY_MODEL, "data.batching.max_batch_seconds=4", "logger=csv", "trainer.max_epochs=5", "test=false", f"ckpt_path={last}"],
        tmp_path,
        data_dir,
    )
    best_val_cer = train(cfg)
    logged_steps = [int(row["step"]) for row in logged(tmp_path)]
    assert min(logged_steps) >= steps_before
    # What a sweep optimizes: the best validation CER of the whole run, the epochs before the resume included.
    val_cer = [float(row["val/cer"]) for run_dir in (trained_run, tmp_path) for row in logged(run_dir) if "val/cer" in row]
    assert len(val_cer) == 5 and best_val_cer == pytest.approx(min(val_cer))
    resumed = read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert resumed["global_step"] > steps_before and resumed["epoch"] == 4


def test_a_checkpoint_of_another_architecture_lists_the_differences(trained_run):
    last = trained_run / "checkpoints" / "last.ckpt"
    expected = read_checkpoint(last)["hyper_parameters"]
    other = {"model": {**expected["model"], "channels": [64] * 10}, "alphabet": expected["alphabet"] + "äöüß"}
    with pytest.raises(CheckpointMismatchError) as error:
        check_compatible(last, other)
    assert "model.channels" in str(error.value) and "alphabet" in str(error.value)


def test_loading_never_executes_code_from_a_checkpoint(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"model": Path("x")}}, path)
    with pytest.raises(ValueError, match=f"{path}.*weights-only"):
        read_checkpoint(path)


@pytest.mark.parametrize(
    ("override", "message"),
    [("modle=small", "Could not override 'modle'"), ("model=huge", "Could not find 'model/huge'")],
)
def test_a_wrong_config_key_or_value_fails_with_hydras_message(override, message, tmp_path):
    result = run_cli("tmaps.commands.train", override, cwd=tmp_path, check=False)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_conformer_trains_with_topography_on_its_feed_forward_units_and_map_callbacks(tmp_path, data_dir):
    """model=conformer_small through the same app: topographic losses and maps on units inside its blocks."""
    layers = "[block0.ffn1.sequential.1,block1.ffn2.sequential.1]"
    cfg = compose_train(
        ["model=conformer_small", "topo=response_correlation", f"topo.layers={layers}", "topo.warmup_steps=0", "callbacks=default",
         "callbacks.activation_profiles.every_n_epochs=1", "logger=csv", "trainer.max_epochs=1", "test=false", *TINY_CORPUS],
        tmp_path,
        data_dir,
    )
    train(cfg)
    loaded = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert type(loaded.model).__name__ == "ConformerCTC" and loaded.hyper_parameters["model"]["arch"] == "conformer"
    metrics = list(csv.DictReader((tmp_path / "csv" / "version_0" / "metrics.csv").open()))
    logged = {key for row in metrics for key, value in row.items() if value}
    assert {"val/topo/block0.ffn1.sequential.1/ratio", "val/topo/block1.ffn2.sequential.1/ratio"} <= logged
    figures = [str(path.relative_to(tmp_path / "figures")) for path in (tmp_path / "figures").rglob("*.png")]
    assert any("block0.ffn1.sequential.1" in name for name in figures), figures


def test_checkpoints_without_an_arch_load_as_wav2letter(trained_run, tmp_path):
    """Checkpoints written before models were a config choice have no model.arch."""
    checkpoint = read_checkpoint(trained_run / "checkpoints" / "last.ckpt")
    checkpoint["hyper_parameters"]["model"].pop("arch")
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)
    assert type(load_checkpoint(old).model).__name__ == "Wav2Letter"
    check_compatible(old, {"model": {**checkpoint["hyper_parameters"]["model"], "arch": "wav2letter"}, "alphabet": checkpoint["hyper_parameters"]["alphabet"]})


def test_a_recipe_without_its_mandatory_checkpoint_names_the_key_to_add(tmp_path, data_dir):
    cfg = compose_train(["experiment=transfer_de", *TINY_CORPUS], tmp_path, data_dir)
    with pytest.raises(ValueError, match=r"mandatory config values are not set: \['transfer.init_from'\]; .* transfer.init_from=\.\.\."):
        train(cfg)

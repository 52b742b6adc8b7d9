"""The callbacks in real training on the tiny synthetic corpus: maps (images, GIFs, profiles, loggers, probe set) and training time."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image, ImageSequence
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tmaps.callbacks import ActivationProfiles, TopographicMaps, TrainTime
from tmaps.callbacks.base import MapCallback, probe_batches
from tmaps.callbacks.topographic_maps import valid_frame_mean
from tmaps.data import SpeechDataModule
from tmaps.data.manifest import SPLITS
from tmaps.introspect import NAP, Panels, Profiles, phoneme_panels
from tmaps.introspect.planted import make_planted_profiles
from tmaps.introspect.render import MapFrame
from tmaps.training.module import ASRModule

TINY = {"channels": [16] * 8 + [32, 32], "kernel_sizes": [11] + [7] * 7 + [1, 1], "strides": [2] + [1] * 9, "norm": "batch", "dropout": 0.1}
TOPO = {"layers": ["conv2"], "loss": "weight_similarity", "grid": {"shape": [4, 4]}}


@pytest.fixture(scope="module")
def data(synth_corpus_en: Path, tmp_path_factory) -> SpeechDataModule:
    splits = {split: f"{split}.jsonl" for split in SPLITS if (synth_corpus_en / f"{split}.jsonl").is_file()}
    datamodule = SpeechDataModule(
        source={"kind": "manifest", "path": str(synth_corpus_en), "splits": splits},
        root=str(tmp_path_factory.mktemp("cache")),
        batching={"max_batch_seconds": 12.0, "num_workers": 0},
        output_stride=2,
    )
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def module(data: SpeechDataModule, topo: dict | None = TOPO) -> ASRModule:
    pl.seed_everything(0)
    return ASRModule(model=TINY, alphabet=data.alphabet.chars, features=data.feature_config, optim={"lr": 3e-3, "schedule": "constant"}, topo=topo)


def fit(pl_module: ASRModule, data: SpeechDataModule, callbacks: list, run_dir: Path, **options) -> pl.Trainer:
    trainer = pl.Trainer(
        accelerator="cpu", enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=callbacks, default_root_dir=run_dir, **{"logger": False, **options},
    )
    trainer.fit(pl_module, train_dataloaders=data.loader("train"), val_dataloaders=data.loader("dev"))
    return trainer


def pngs(run_dir: Path, key: str) -> list[Path]:
    return sorted((run_dir / "figures" / key).glob("step*.png"))


@pytest.fixture(scope="module")
def two_epochs(data, tmp_path_factory):
    """Two short epochs with both callbacks every epoch and a TensorBoard logger."""
    run_dir = tmp_path_factory.mktemp("run")
    callbacks = [TopographicMaps(), ActivationProfiles(every_n_epochs=1, n_probe_utterances=8, probe_batch_size=4)]
    logger = TensorBoardLogger(run_dir, name="tb")
    trainer = fit(module(data), data, callbacks, run_dir, logger=logger, max_epochs=2, limit_train_batches=2, limit_val_batches=1)
    return run_dir, trainer, callbacks, Path(logger.log_dir)


def test_maps_of_the_topographic_layer_every_epoch_with_a_gif_each(two_epochs):
    run_dir, trainer, _, _ = two_epochs
    for key in ("maps__filters__conv2", "maps__activations__conv2", "profiles__map__conv2", "profiles__adjusted_rand"):
        assert len(pngs(run_dir, key)) == 2, key
    for key in ("maps__filters__conv2", "maps__activations__conv2", "profiles__map__conv2"):
        assert Image.open(run_dir / "figures" / key / "evolution.gif").n_frames == 2, key
    assert not (run_dir / "figures" / "maps__filters__conv3").exists()  # not a topographic layer


def test_training_time_phoneme_maps_are_ipa_by_class_and_name_their_quantity(two_epochs):
    run_dir = two_epochs[0]
    profiles = Profiles.load(sorted((run_dir / "profiles").glob("nap_step*.npz"))[-1])
    frame = MapFrame.load(pngs(run_dir, "profiles__map__conv2")[-1].with_suffix(".npz"))
    assert frame.panels == phoneme_panels(profiles.groups) and frame.panels.sections is not None
    assert frame.colorbar_label == "NAP (activation minus the mean over groups)"
    np.testing.assert_allclose(frame.maps.values, profiles["conv2"].mean)
    activations = MapFrame.load(pngs(run_dir, "maps__activations__conv2")[-1].with_suffix(".npz"))
    assert activations.colorbar_label == "mean activation over the valid frames" and activations.panels.labels == ["probe set"]


def test_the_saved_profiles_are_phoneme_naps_of_every_layer_and_feed_the_ari_table(two_epochs):
    run_dir, trainer, (_, profiles_callback), _ = two_epochs
    saved = sorted((run_dir / "profiles").glob("nap_step*.npz"))
    assert len(saved) == 2
    profiles = Profiles.load(saved[-1])
    assert profiles.layers == trainer.lightning_module.model.layer_names
    assert profiles.info["grouping"] == "phoneme" and len(profiles.groups) > 10
    assert [row[0] for row in profiles_callback.adjusted_rand_rows] == [0] * 11 + [1] * 11
    assert all(-1.0 <= row[2] <= 1.0 for row in profiles_callback.adjusted_rand_rows)


def test_the_probe_profiles_match_a_nap_of_the_final_model(two_epochs, data):
    run_dir, trainer, (_, profiles_callback), _ = two_epochs
    saved = Profiles.load(sorted((run_dir / "profiles").glob("nap_step*.npz"))[-1])
    model = trainer.lightning_module.model
    again = NAP(model, model.layer_names).compute(probe_batches(data.loader("dev"), 8, 4), "phoneme")
    assert again.groups == saved.groups
    for layer in saved.layers:
        np.testing.assert_allclose(again.sums[layer], saved.sums[layer], rtol=1e-6)


def test_tensorboard_gets_the_images_and_the_ari_table(two_epochs):
    _, _, _, log_dir = two_epochs
    events = EventAccumulator(str(log_dir), size_guidance={"images": 0, "tensors": 0}).Reload()
    images = events.Tags()["images"]
    assert {"maps/filters/conv2", "maps/activations/conv2", "profiles/map/conv2", "profiles/adjusted_rand"} <= set(images)
    assert len(events.Images("maps/filters/conv2")) == 2
    assert any("profiles/adjusted_rand_table" in tag for tag in events.Tags()["tensors"])


def test_under_fast_dev_run_without_logger_every_callback_writes_its_images(data, tmp_path):
    callbacks = [
        TopographicMaps(layers=["conv0", "conv2"], layout="pca"),
        ActivationProfiles(kind="gradnap", layout="som", map_layers=["conv2"], every_n_epochs=1, n_probe_utterances=6, probe_batch_size=3),
    ]
    fit(module(data), data, callbacks, tmp_path, fast_dev_run=True)
    for key in ("maps__filters__conv0", "maps__activations__conv0", "maps__activations__conv2", "profiles__map__conv2", "profiles__adjusted_rand"):
        assert len(pngs(tmp_path, key)) == 1, key
    assert Profiles.load(next((tmp_path / "profiles").glob("gradnap_step*.npz"))).info["kind"] == "GradNAP"


def test_a_module_without_topographic_layers_gets_profiles_and_ari_but_maps_only_of_the_layers_asked_for(data, tmp_path):
    callbacks = [
        TopographicMaps(),
        ActivationProfiles(every_n_epochs=1, n_probe_utterances=4),
        ActivationProfiles(every_n_epochs=1, map_layers=["head"], layout="pca", n_probe_utterances=4),
    ]
    fit(module(data, topo=None), data, callbacks, tmp_path, fast_dev_run=True)
    drawn = sorted(path.name for path in (tmp_path / "figures").iterdir())
    assert drawn == ["profiles__adjusted_rand", "profiles__map__head"]


def test_drawing_maps_leaves_the_model_and_its_batchnorm_statistics_alone(data, tmp_path):
    pl_module = module(data)
    callbacks = [TopographicMaps(), ActivationProfiles(every_n_epochs=1, n_probe_utterances=4)]
    trainer = fit(pl_module, data, [], tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=0)
    before = {name: tensor.clone() for name, tensor in pl_module.state_dict().items()}
    pl_module.train()
    for callback in callbacks:
        callback.on_fit_start(trainer, pl_module)
        callback.on_train_epoch_end(trainer, pl_module)
    assert pl_module.training
    for name, tensor in pl_module.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_the_probe_set_is_the_utterances_nearest_the_median_duration_in_length_order(data):
    loader = data.loader("dev")
    durations = np.array(loader.dataset.durations)
    batches = probe_batches(loader, 5, 2)
    assert [len(batch["records"]) for batch in batches] == [2, 2, 1]
    chosen = [record["duration"] for batch in batches for record in batch["records"]]
    assert chosen == sorted(chosen)
    distance = np.abs(durations - np.median(durations))
    assert max(abs(np.array(chosen) - np.median(durations))) <= np.sort(distance)[4] + 1e-12
    assert batches[0]["features"].shape[:2] == (2, data.feature_config["n_mels"])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: TopographicMaps(layout="spiral"), "layout must be one of"),
        (lambda: ActivationProfiles(kind="lrp"), "kind must be one of"),
        (lambda: ActivationProfiles(every_n_epochs=0), "every_n_epochs must be >= 1"),
    ],
)
def test_bad_arguments_name_the_value_at_fault(make, message):
    with pytest.raises(ValueError, match=message):
        make()


class ScaledMaps(MapCallback):
    """Maps of one planted profile, scaled by the epoch number: 1x, 2x, ..."""

    def __init__(self) -> None:
        super().__init__(None, "pca", every_n_epochs=1, n_probe_utterances=1, probe_batch_size=1, gif_frame_ms=100, seed=0)
        values, self.coords, _ = make_planted_profiles(60, n_groups=2, seed=0)
        self.values = values.T

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        self.log_values(trainer, "scaled", self.coords, (epoch + 1) * self.values, Panels(["a", "b"]), f"epoch {epoch}", "planted profile")


def colourfulness(image: np.ndarray) -> float:
    """Mean chroma: grey text, white background and the (fixed) colour bar add the same to every frame."""
    rgb = np.asarray(image, dtype=np.float64)[..., :3]
    return float((rgb.max(axis=-1) - rgb.min(axis=-1)).mean())


def test_map_frames_share_the_colour_scale_of_the_run_in_the_gif(data, tmp_path):
    fit(module(data), data, [ScaledMaps()], tmp_path, max_epochs=2, limit_train_batches=1, limit_val_batches=0)
    first, second = (colourfulness(Image.open(path).convert("RGB")) for path in pngs(tmp_path, "scaled"))
    assert first == pytest.approx(second, rel=0.15)  # each PNG on the scale so far: 1x on 1, 2x on 2
    with Image.open(tmp_path / "figures" / "scaled" / "evolution.gif") as gif:
        frames = [colourfulness(frame.convert("RGB")) for frame in ImageSequence.Iterator(gif)]
    assert frames[1] == pytest.approx(second, rel=0.05)
    assert frames[0] < 0.8 * frames[1]  # the GIF draws the 1x epoch on the run's 2x scale: paler
    saved = [MapFrame.load(path.with_suffix(".npz")) for path in pngs(tmp_path, "scaled")]  # what the report redraws
    np.testing.assert_allclose(saved[1].maps.values, 2 * saved[0].maps.values)
    assert saved[0].panels == Panels(["a", "b"]) and saved[0].colorbar_label == "planted profile"
    redrawn = saved[0].plot(limit=saved[1].maps.limit)
    assert redrawn.axes[0].images[0].norm.vmax == pytest.approx(2 * saved[0].maps.limit)


def test_activation_maps_average_the_valid_frames_of_the_probe_set_however_it_is_batched(data):
    """fp32: the grid maps' mean activations over probe batches of 8, 3 and 1 utterances equal the mean over valid frames."""
    model = module(data).model.eval()
    layers = ["conv2", "conv9"]
    means = {}
    for batch_size in (8, 3, 1):
        batches = probe_batches(data.loader("dev"), 8, batch_size)
        profiles = NAP(model, layers).compute(batches, "id")
        means[batch_size] = {layer: valid_frame_mean(profiles, layer) for layer in layers}
    batch = probe_batches(data.loader("dev"), 8, 8)[0]
    assert len(set(batch["feature_lengths"].tolist())) > 1, "the probe batch should be padded"
    outputs = {}
    for layer in layers:
        model.get_submodule(layer).register_forward_hook(lambda _, inputs, output, layer=layer: outputs.__setitem__(layer, output))
    with torch.no_grad():
        model(batch["features"], batch["feature_lengths"])
    lengths = model.conv0.output_length(batch["feature_lengths"])  # stride 1 after conv0
    for layer in layers:
        valid = torch.cat([outputs[layer][b, :, :n] for b, n in enumerate(lengths)], dim=1).double()
        expected = valid.mean(1).numpy()
        for batch_size in (8, 3, 1):
            np.testing.assert_allclose(means[batch_size][layer], expected, rtol=1e-5, atol=1e-7)
        assert not np.allclose(expected, outputs[layer].double().mean((0, 2)).numpy(), rtol=1e-3), "padding would move the mean"


class SlowValidation(pl.Callback):
    """Makes every validation, the sanity check included, last ``seconds`` longer."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        time.sleep(self.seconds)


def test_train_time_counts_elapsed_seconds_from_its_origin_and_leaves_validations_out(data, tmp_path):
    since, pause = time.time() - 100, 0.5
    fit(
        module(data, topo=None), data, [TrainTime(since=since), SlowValidation(pause)], tmp_path, logger=CSVLogger(tmp_path, name="csv"),
        max_steps=4, val_check_interval=2, check_val_every_n_epoch=None, limit_val_batches=1,
    )
    finished = time.time()
    rows = [row for row in csv.DictReader((tmp_path / "csv" / "version_0" / "metrics.csv").open()) if row["time/elapsed_s"]]
    elapsed, train = [float(row["time/elapsed_s"]) for row in rows], [float(row["time/train_s"]) for row in rows]
    assert len(rows) == 2
    assert elapsed[0] >= 100 + train[0] and elapsed[1] - elapsed[0] >= train[1] - train[0]
    # The sanity check and the first validation, each at least `pause` long, are not counted at the second.
    assert elapsed[1] <= finished - since - 2 * pause

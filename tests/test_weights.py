"""Weight-change introspection, the WeightChange callback and ``tmaps-compare``."""

from __future__ import annotations

import copy
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import torchaudio
from PIL import Image

# The tiny model, the corpora and the English checkpoint of the transfer tests.
from test_transfer import LAYERS, TINY, english_checkpoint, english_data, fit, german_data  # noqa: F401

from tmaps.callbacks.transfer import setup_transfer
from tmaps.callbacks.weight_change import WeightChange
from tmaps.introspect.weights import WeightMismatchError, change_table, filter_change, layer_weights, weight_change
from tmaps.models import Wav2Letter
from tmaps.training.module import ASRModule


def tiny_model(**overrides) -> Wav2Letter:
    arguments = dict(n_features=8, n_classes=5, channels=[6, 6], kernel_sizes=[3, 1], strides=[2, 1], norm="batch")
    return Wav2Letter(**{**arguments, **overrides})


def test_identical_weights_have_no_change_and_full_cosine():
    model = tiny_model()
    changes = weight_change(model, copy.deepcopy(model))
    assert list(changes) == ["conv0", "conv1", "head"]
    for change in changes.values():
        assert change.relative_change == 0
        assert torch.equal(change.filter_change, torch.zeros_like(change.filter_change))
        torch.testing.assert_close(change.filter_cosine, torch.ones_like(change.filter_cosine))


def test_change_matches_a_hand_computation():
    initial = torch.tensor([[[3.0, 4.0]], [[1.0, 0.0]], [[0.0, 0.0]]])  # (out=3, in=1, kernel=2)
    current = torch.tensor([[[3.0, 4.0]], [[0.0, 2.0]], [[1.0, 1.0]]])
    change = filter_change(initial, current)
    # ||W_t - W_0|| = sqrt(0 + (1 + 4) + 2) = sqrt(7); ||W_0|| = sqrt(25 + 1) = sqrt(26).
    assert change.relative_change == pytest.approx(math.sqrt(7 / 26))
    assert change.initial_norm == pytest.approx(math.sqrt(26))
    # Filter 0 kept, filter 1 turned by 90 degrees and moved by sqrt(5) from norm 1, filter 2 started at zero.
    torch.testing.assert_close(change.filter_change[:2], torch.tensor([0.0, math.sqrt(5)]))
    torch.testing.assert_close(change.filter_cosine[:2], torch.tensor([1.0, 0.0]))
    assert change.filter_change[2].isnan() and change.filter_cosine[2].isnan()
    assert change.shape == (3, 1, 2)


def test_models_and_state_dicts_give_the_same_change():
    start, end = tiny_model(), tiny_model()
    from_models = weight_change(start, end)
    from_state_dicts = weight_change(start.state_dict(), end.state_dict(), layer_names=start.layer_names)
    for name in start.layer_names:
        assert from_models[name].relative_change == pytest.approx(from_state_dicts[name].relative_change)
    # Without layer names a state dict's layers are its weight matrices (BatchNorm weights are 1-D).
    assert list(layer_weights(start.state_dict())) == ["conv0.conv", "conv1.conv", "head"]


def test_any_model_with_matching_layers_works():
    model = torchaudio.models.Wav2Letter(num_classes=5, input_type="mfcc", num_features=8)
    changes = weight_change(model, copy.deepcopy(model))
    assert len(changes) == 11 and all(change.relative_change == 0 for change in changes.values())


def test_mismatched_weights_are_listed():
    with pytest.raises(WeightMismatchError) as error:
        weight_change(tiny_model(), tiny_model(channels=[6, 7]))
    message = str(error.value)
    assert "conv1: shape (7, 6, 1) in the current weights, (6, 6, 1) in the initial weights" in message
    assert "head: shape (5, 7, 1)" in message
    assert "conv0" not in message
    with pytest.raises(ValueError, match="no layer 'conv2'"):
        weight_change(tiny_model(channels=[6, 6, 6], kernel_sizes=[3, 1, 1], strides=[2, 1, 1]), tiny_model())


def test_change_table_has_a_row_per_layer():
    start = tiny_model()
    end = copy.deepcopy(start)
    with torch.no_grad():
        end.head.weight.mul_(2)
    table = change_table(weight_change(start, end))
    assert table["layer"].tolist() == ["conv0", "conv1", "head"]
    assert table["relative change"].tolist() == pytest.approx([0.0, 0.0, 1.0])
    assert table["cosine median"].tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert table["shape"].tolist() == ["6x8x3", "6x6x1", "5x6x1"]


# --- in training, and between checkpoints ----------------------------------------------------

@pytest.fixture(scope="module")
def german_run(english_checkpoint, german_data, tmp_path_factory):
    """A German model started from the English one, first 4 layers frozen, topographic conv5, 2 epochs."""
    run_dir = tmp_path_factory.mktemp("german_run")
    module = ASRModule(
        model=TINY,
        alphabet=german_data.alphabet.chars,
        features=german_data.feature_config,
        optim={"lr": 1e-3, "schedule": "constant"},
        topo={"layers": ["conv5"], "loss": "weight_similarity", "grid": {"shape": [2, 8]}},
    )
    callbacks = setup_transfer(module, {"init_from": str(english_checkpoint), "freeze_first": 4})
    trainer = fit(module, german_data, callbacks, max_steps=-1, max_epochs=2, limit_train_batches=2, default_root_dir=run_dir)
    checkpoint = run_dir / "german.ckpt"
    trainer.save_checkpoint(checkpoint, weights_only=True)
    (weight_change_callback,) = [callback for callback in callbacks if isinstance(callback, WeightChange)]
    return run_dir, checkpoint, weight_change_callback


def test_weight_change_callback_logs_every_epoch_without_a_logger(german_run):
    run_dir, _, callback = german_run
    assert callback.epochs == [0, 1]
    for changes in callback.history:
        assert changes[:4] == [0.0] * 4  # frozen
        assert all(change > 0 for change in changes[4:])
    assert callback.history[1][-1] > callback.history[0][-1]  # the head keeps moving away
    figures = run_dir / "figures"
    for key in ("weights__change_heatmap", "weights__change_lines", "weights__filter_cosine", "weights__change_map__conv5"):
        assert len(list((figures / key).glob("step*.png"))) == 2, key
    gif = Image.open(figures / "weights__change_map__conv5" / "evolution.gif")
    assert gif.n_frames == 2
    table = pd.read_csv(run_dir / "weight_change.csv")
    assert list(table.epoch) == [0, 1]
    np.testing.assert_allclose(table.drop(columns="epoch").to_numpy(), callback.history, rtol=1e-12)
    assert not (figures / "weights__change_map__conv4").exists()  # not a topographic layer


def run_compare(*arguments) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tmaps.commands.compare", *map(str, arguments)], capture_output=True, text=True, timeout=120)


def test_compare_prints_the_per_layer_table(german_run, english_checkpoint, tmp_path):
    _, german_checkpoint, callback = german_run
    table_file = tmp_path / "change.csv"
    result = run_compare(english_checkpoint, german_checkpoint, f"csv={table_file}")  # the short form: bare checkpoint paths
    assert result.returncode == 0, result.stderr
    assert list(pd.read_csv(table_file)["layer"]) == LAYERS
    lines = result.stdout.splitlines()
    assert "head: compared on the blank and the characters both alphabets have" in lines
    header = next(index for index, line in enumerate(lines) if line.split()[:2] == ["layer", "shape"])
    rows = [line.split() for line in lines[header + 1 :]]
    assert [row[0] for row in rows] == LAYERS
    assert rows[0][1] == "16x40x11" and rows[-1][1] == "29x32x1"  # the head on the 29 classes English and German share
    relative = [float(row[3]) for row in rows]
    assert relative[:4] == [0.0] * 4
    # The same numbers as the callback measured at the end, except for the head (compared on shared rows only).
    assert relative[4:-1] == pytest.approx(callback.history[-1][4:-1], abs=1e-4)


def test_compare_refuses_incompatible_checkpoints_naming_the_tensors(english_checkpoint, english_data, tmp_path):
    wider = ASRModule(
        model={**TINY, "channels": [16] * 8 + [48, 32]}, alphabet=english_data.alphabet.chars, features=english_data.feature_config, optim={"lr": 1e-3}
    )
    trainer = fit(wider, english_data, max_steps=1)
    path = tmp_path / "wider.ckpt"
    trainer.save_checkpoint(path, weights_only=True)
    result = run_compare(f"first={english_checkpoint}", f"second={path}")
    assert result.returncode == 1
    message = result.stderr
    assert message.startswith("tmaps-compare: ") and "are different models" in message
    assert "conv8.conv.weight: shape (48, 16, 1)" in message and "conv9.conv.weight: shape (32, 48, 1)" in message

"""English -> German transfer: alphabet swap, checkpoint init, freezing, gradual unfreezing, recipes."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from tmaps.callbacks.transfer import TransferLearning, setup_transfer
from tmaps.checkpoint import CheckpointMismatchError, load_checkpoint
from tmaps.data import SpeechDataModule
from tmaps.data.manifest import SPLITS
from tmaps.introspect.weights import layer_weights
from tmaps.models import Wav2Letter, build_model
from tmaps.text import Alphabet
from tmaps.training.module import ASRModule
from tmaps.transfer import (
    TransferConfig,
    first_layers,
    freeze_layers,
    init_from_state_dict,
    is_frozen,
    map_head_rows,
    matching_layers,
    shared_classes,
    swap_alphabet,
)

ENGLISH, GERMAN = Alphabet.for_language("en"), Alphabet.for_language("de")
# The 11-layer layout of conf/model/small.yaml, narrowed so that a few steps take a second.
TINY = {"channels": [16] * 8 + [32, 32], "kernel_sizes": [11] + [7] * 7 + [1, 1], "strides": [2] + [1] * 9, "norm": "batch", "dropout": 0.1}
LAYERS = [f"conv{i}" for i in range(10)] + ["head"]


def corpus_data(corpus: Path, root: Path, language: str) -> SpeechDataModule:
    splits = {split: f"{split}.jsonl" for split in SPLITS if (corpus / f"{split}.jsonl").is_file()}
    data = SpeechDataModule(
        source={"kind": "manifest", "path": str(corpus), "splits": splits},
        root=str(root),
        language=language,
        batching={"max_batch_seconds": 12.0, "num_workers": 0},
        output_stride=2,
    )
    data.prepare_data()
    data.setup("fit")
    return data


def asr_module(data: SpeechDataModule, **optim) -> ASRModule:
    optim = {"lr": 1e-3, "schedule": "constant", **optim}
    return ASRModule(model=TINY, alphabet=data.alphabet.chars, features=data.feature_config, optim=optim)


def fit(module: ASRModule, data: SpeechDataModule, callbacks=(), **trainer_options) -> pl.Trainer:
    options = {"max_steps": 3, "limit_val_batches": 0, "num_sanity_val_steps": 0, **trainer_options}
    trainer = pl.Trainer(
        accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=list(callbacks), **options,
    )
    trainer.fit(module, train_dataloaders=data.loader("train"))
    return trainer


@pytest.fixture(scope="module")
def english_data(synth_corpus_en, tmp_path_factory) -> SpeechDataModule:
    return corpus_data(synth_corpus_en, tmp_path_factory.mktemp("cache_en"), "en")


@pytest.fixture(scope="module")
def german_data(synth_corpus_de, tmp_path_factory) -> SpeechDataModule:
    return corpus_data(synth_corpus_de, tmp_path_factory.mktemp("cache_de"), "de")


@pytest.fixture(scope="module")
def english_checkpoint(english_data, tmp_path_factory) -> Path:
    """A tiny English model after a few real training steps, saved as a tmaps checkpoint."""
    pl.seed_everything(0)
    module = asr_module(english_data)
    trainer = fit(module, english_data)
    path = tmp_path_factory.mktemp("source") / "english.ckpt"
    trainer.save_checkpoint(path, weights_only=True)
    return path


def german_module(german_data, english_checkpoint, config: dict, **optim) -> tuple[ASRModule, list]:
    module = asr_module(german_data, **optim)
    return module, setup_transfer(module, {"init_from": str(english_checkpoint), **config})


# --- the output layer's alphabet ---------------------------------------------------------------


@pytest.mark.parametrize("new_chars", ["zero", "mean"])
def test_alphabet_swap_copies_shared_rows_and_starts_new_ones(new_chars):
    source, target = Alphabet(" abc'"), Alphabet("cxa y")  # shared: c, a, space; new: x, y; b and ' dropped
    weight, bias = torch.randn(source.n_classes, 4, 1), torch.randn(source.n_classes)
    new_weight, new_bias = map_head_rows(weight, bias, source, target, new_chars)
    assert new_weight.shape == (target.n_classes, 4, 1) and new_bias.shape == (target.n_classes,)
    for char in "ca ":
        assert torch.equal(new_weight[target.index(char)], weight[source.index(char)])
        assert torch.equal(new_bias[target.index(char)], bias[source.index(char)])
    assert torch.equal(new_weight[0], weight[0]) and torch.equal(new_bias[0], bias[0])  # the blank
    shared_char_rows = [source.index(char) for char in "ca "]
    for char in "xy":
        expected_weight = weight[shared_char_rows].mean(0) if new_chars == "mean" else torch.zeros(4, 1)
        expected_bias = bias[shared_char_rows].mean() if new_chars == "mean" else torch.tensor(0.0)
        torch.testing.assert_close(new_weight[target.index(char)], expected_weight)
        torch.testing.assert_close(new_bias[target.index(char)], expected_bias)


def test_swap_alphabet_gives_the_model_a_german_head():
    model = Wav2Letter(n_features=8, n_classes=ENGLISH.n_classes, channels=[6], kernel_sizes=[3], strides=[1])
    english_head = model.head.weight.detach().clone()
    swap_alphabet(model, ENGLISH, GERMAN)
    assert model.n_classes == GERMAN.n_classes and model.head.out_channels == GERMAN.n_classes
    source_rows, target_rows = shared_classes(ENGLISH, GERMAN)
    assert len(source_rows) == ENGLISH.n_classes  # every English character is German too
    assert torch.equal(model.head.weight[target_rows], english_head[source_rows])
    assert not model.head.weight[[GERMAN.index(char) for char in "äöüß"]].any()
    log_probs, _ = model(torch.randn(2, 8, 10), torch.tensor([10, 7]))
    assert log_probs.shape == (2, 10, GERMAN.n_classes)


def test_alphabets_without_a_common_character_warn_naming_both():
    with pytest.warns(UserWarning, match=r"the alphabets 'abc' and 'xyz' have no character in common"):
        weight, _ = map_head_rows(torch.randn(4, 2), None, Alphabet("abc"), Alphabet("xyz"), "mean")
    assert not weight[1:].any()


def test_bad_new_chars_option_is_refused():
    with pytest.raises(ValueError, match="new_chars must be one of"):
        TransferConfig(new_chars="random")


# --- choosing layers ---------------------------------------------------------------------------


def test_freeze_first_counts_layers_from_the_input():
    assert first_layers(LAYERS, 0) == []
    assert first_layers(LAYERS, 8) == LAYERS[:8]
    assert first_layers(LAYERS, "all_but_head") == first_layers(LAYERS, 10) == LAYERS[:10]


@pytest.mark.parametrize("count", [11, -1, True, 2.5])
def test_freeze_first_out_of_range_names_the_valid_range(count):
    with pytest.raises(ValueError, match=r"integer from 0 to 10 or 'all_but_head': the model has 11 layers \(conv0, .*head\)"):
        first_layers(LAYERS, count)


def test_freeze_patterns_select_layers_and_typos_are_errors():
    assert matching_layers(LAYERS, ["conv[0-2]", "head"]) == ["conv0", "conv1", "conv2", "head"]
    with pytest.raises(ValueError, match=r"layer patterns \['cnv\*'\] match none of the layers"):
        matching_layers(LAYERS, ["cnv*"])


def test_unknown_config_keys_are_listed():
    with pytest.raises(ValueError, match=r"transfer.freeze: TransferConfig has no such argument; it takes \['freeze_first'"):
        TransferConfig.from_dict({"freeze": 3})


def test_empty_config_does_nothing():
    model = Wav2Letter(n_features=8, n_classes=5, channels=[6], kernel_sizes=[3], strides=[1])
    assert setup_transfer(model, None) == [] and setup_transfer(model, {}) == []


# --- starting from a checkpoint ----------------------------------------------------------------


def test_init_from_checkpoint_keeps_weights_and_shared_output_rows(english_checkpoint, german_data):
    source = load_checkpoint(english_checkpoint)
    module, callbacks = german_module(german_data, english_checkpoint, {"new_chars": "mean"})
    target = module.model.state_dict()
    for key, value in source.model.state_dict().items():
        if not key.startswith("head."):
            assert torch.equal(target[key], value), key
    source_rows, target_rows = shared_classes(ENGLISH, GERMAN)
    assert torch.equal(target["head.weight"][target_rows], source.model.head.weight[source_rows])
    umlaut = GERMAN.index("ä")
    torch.testing.assert_close(target["head.bias"][umlaut], source.model.head.bias[1:].mean())
    assert module.hparams["transfer"]["init_from"] == str(english_checkpoint)
    assert not any(isinstance(callback, TransferLearning) for callback in callbacks)  # nothing frozen


def test_incompatible_checkpoint_lists_the_tensors_that_differ(english_checkpoint, german_data):
    module = ASRModule(
        model={**TINY, "channels": [16] * 8 + [48, 32]}, alphabet=GERMAN.chars, features=german_data.feature_config, optim={"lr": 1e-3}
    )
    with pytest.raises(CheckpointMismatchError) as error:
        setup_transfer(module, {"init_from": str(english_checkpoint)})
    message = str(error.value)
    assert str(english_checkpoint) in message
    assert "conv8.conv.weight: shape (32, 16, 1) in the checkpoint" in message and "(48, 16, 1) in the model" in message
    assert "conv8.norm.running_mean: shape (32,)" in message and "conv9.conv.weight: shape (32, 32, 1)" in message
    assert "conv0" not in message

    renamed = {key.replace("conv9.", "conv10."): value for key, value in load_checkpoint(english_checkpoint).model.state_dict().items()}
    model = build_model(module.hparams.model)
    with pytest.raises(CheckpointMismatchError, match=r"conv9.conv.weight: missing from the checkpoint(.|\n)*conv10.conv.weight: unexpected"):
        init_from_state_dict(model, renamed, ENGLISH, GERMAN)


def test_reinit_unfrozen_redraws_only_the_layers_above_the_frozen_ones(english_checkpoint, german_data):
    source = layer_weights(load_checkpoint(english_checkpoint).model)
    module, _ = german_module(german_data, english_checkpoint, {"freeze_first": 8, "reinit_unfrozen": True})
    weights = layer_weights(module.model)
    kept = [name for name in LAYERS if torch.equal(weights[name][: ENGLISH.n_classes], source[name][: ENGLISH.n_classes])]
    assert kept == LAYERS[:8]
    assert torch.equal(module.model.conv8.norm.running_var, torch.ones(32))  # BatchNorm statistics are reset too


# --- frozen layers in real training ------------------------------------------------------------


def test_frozen_layers_and_their_batchnorm_statistics_do_not_move(english_checkpoint, german_data, tmp_path):
    module, callbacks = german_module(german_data, english_checkpoint, {"freeze_first": 4})
    before = {key: value.clone() for key, value in module.model.state_dict().items()}
    trainer = fit(module, german_data, callbacks, default_root_dir=tmp_path)
    after = module.model.state_dict()
    for key, value in before.items():
        layer = key.split(".")[0]
        if layer in LAYERS[:4]:
            assert torch.equal(after[key], value), f"frozen {key} changed"
        elif key.endswith(("conv.weight", "running_mean")):
            assert not torch.equal(after[key], value), f"trained {key} did not change"
    in_optimizer = {id(parameter) for group in trainer.optimizers[0].param_groups for parameter in group["params"]}
    for name in LAYERS:
        parameters = list(module.model.get_submodule(name).parameters())
        assert all((id(parameter) in in_optimizer) == (name not in LAYERS[:4]) for parameter in parameters), name
    assert [group["name"] for group in trainer.optimizers[0].param_groups] == LAYERS[4:]


def test_frozen_batchnorm_stays_in_eval_mode_after_train():
    model = Wav2Letter(n_features=8, n_classes=5, channels=[6, 6], kernel_sizes=[3, 1], strides=[1, 1], norm="batch")
    freeze_layers(model, ["conv0"])
    model.train()
    statistics = model.conv0.norm.running_mean.clone()
    model(torch.randn(3, 8, 20), torch.tensor([20, 20, 20]))
    assert not model.conv0.norm.training and model.conv1.norm.training
    assert torch.equal(model.conv0.norm.running_mean, statistics)
    assert is_frozen(model, "conv0") and not is_frozen(model, "conv1")


class GroupRecorder(pl.Callback):
    """Records, at the start of every epoch, the optimizer's groups (name -> lr) and the frozen layers."""

    def __init__(self) -> None:
        self.groups: list[dict[str, float]] = []
        self.frozen: list[list[str]] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.groups.append({group["name"]: group["lr"] for group in trainer.optimizers[0].param_groups})
        self.frozen.append([name for name in LAYERS if is_frozen(pl_module.model, name)])


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_gradual_unfreezing_adds_one_layer_every_n_epochs_at_its_discriminative_rate(english_checkpoint, german_data, schedule, tmp_path):
    decay = 0.5
    module, callbacks = german_module(
        german_data, english_checkpoint, {"freeze_first": 8, "unfreeze_every_n_epochs": 2}, lr_decay_per_layer=decay, schedule=schedule
    )
    recorder = GroupRecorder()
    fit(module, german_data, [*callbacks, recorder], max_steps=-1, max_epochs=5, limit_train_batches=1, default_root_dir=tmp_path)
    assert [len(frozen) for frozen in recorder.frozen] == [8, 8, 7, 7, 6]
    assert recorder.frozen[2] == LAYERS[:7] and recorder.frozen[4] == LAYERS[:6]
    assert [list(groups) for groups in recorder.groups[::2]] == [LAYERS[8:], [*LAYERS[8:], "conv7"], [*LAYERS[8:], "conv7", "conv6"]]
    for groups in recorder.groups:
        for name, lr in groups.items():
            # Discriminative: layer i of 11 at decay ** (10 - i) times the head's rate, whatever the schedule's factor.
            assert lr == pytest.approx(groups["head"] * decay ** (10 - LAYERS.index(name))), name
    if schedule == "constant":
        assert recorder.groups[4]["conv6"] == pytest.approx(1e-3 * decay**4)
    else:
        assert recorder.groups[4]["head"] < recorder.groups[2]["head"]  # the cosine schedule moves the new groups too


class LearningRateRecorder(pl.Callback):
    """The head's learning rate before every optimizer step."""

    def __init__(self) -> None:
        self.rates: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.rates.append(trainer.optimizers[0].param_groups[0]["lr"])


@pytest.mark.parametrize("max_steps", [6, 9])
def test_the_constant_schedule_warms_up_then_holds_the_rate_whatever_the_budget(german_data, max_steps, tmp_path):
    module, recorder = asr_module(german_data, lr=1e-3, warmup_steps=3), LearningRateRecorder()
    fit(module, german_data, [recorder], max_steps=max_steps, max_epochs=-1, default_root_dir=tmp_path)
    assert recorder.rates == pytest.approx([1e-3 / 3, 2e-3 / 3, 1e-3] + [1e-3] * (max_steps - 3))


class StepRecorder(pl.Callback):
    """Records the frozen layers before every optimizer step (after the transfer callback's hook)."""

    def __init__(self) -> None:
        self.frozen: list[list[str]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.frozen.append([name for name in LAYERS if is_frozen(pl_module.model, name)])


def test_gradual_unfreezing_in_steps_is_independent_of_the_epoch_length(english_checkpoint, german_data, tmp_path):
    module, callbacks = german_module(german_data, english_checkpoint, {"freeze_first": 8, "unfreeze_every_n_steps": 2})
    recorder = StepRecorder()
    fit(module, german_data, [*callbacks, recorder], max_steps=5, max_epochs=-1, limit_train_batches=3, default_root_dir=tmp_path)
    assert [len(frozen) for frozen in recorder.frozen] == [8, 8, 7, 7, 6]
    assert recorder.frozen[4] == LAYERS[:6]
    assert {group["name"] for group in module.trainer.optimizers[0].param_groups} == {*LAYERS[6:]}


def test_unfreezing_in_epochs_and_steps_at_once_is_refused():
    with pytest.raises(ValueError, match="unfreeze_every_n_epochs and transfer.unfreeze_every_n_steps are both set"):
        TransferConfig.from_dict({"init_from": None, "unfreeze_every_n_epochs": 1, "unfreeze_every_n_steps": 10})


"""The Wav2Letter model: architecture, presets, lengths, padding invariance, loading pre-masking checkpoints."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torchaudio

import tmaps.conf
from tmaps.checkpoint import load_checkpoint, save_checkpoint
from tmaps.data import SpeechDataModule
from tmaps.data.dataset import collate
from tmaps.models import Wav2Letter, build_model, conformer_small, preset_config, wav2letter_paper, wav2letter_small, wav2letter_small_s3, wav2letter_small_s4
from tmaps.text import Alphabet
from tmaps.training.module import ASRModule

ENGLISH = Alphabet.for_language("en")


def test_default_architecture_is_the_papers_and_torchaudios():
    ours = Wav2Letter(n_features=128, n_classes=29)
    theirs = torchaudio.models.Wav2Letter(num_classes=29, input_type="mfcc", num_features=128)
    assert ours.layer_names == [f"conv{i}" for i in range(10)] + ["head"]
    assert [tuple(p.shape) for p in ours.parameters()] == [tuple(p.shape) for p in theirs.parameters()]


@pytest.mark.parametrize("norm", ["none", "batch", "layer"])
def test_output_lengths_match_the_frames_each_utterance_produces(norm):
    model = Wav2Letter(n_features=40, n_classes=29, channels=[32, 32, 48], kernel_sizes=[11, 7, 1], strides=[2, 1, 1], norm=norm).eval()
    lengths = torch.tensor([157, 100, 31])
    features = torch.randn(3, 40, 157)
    log_probs, output_lengths = model(features, lengths)
    assert log_probs.shape == (3, 79, 29)
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(3, 79))
    for i, length in enumerate(lengths):
        alone, _ = model(features[i : i + 1, :, :length], lengths[i : i + 1])
        assert alone.shape[1] == output_lengths[i]
    assert model.stride == 2


def test_mismatched_layer_lists_are_refused():
    with pytest.raises(ValueError, match="one entry per hidden layer; got 2, 1 and 2"):
        Wav2Letter(channels=[8, 8], kernel_sizes=[3], strides=[1, 1])
    with pytest.raises(ValueError, match="norm must be"):
        Wav2Letter(channels=[8], kernel_sizes=[3], strides=[1], norm="group")


PRESET_BUILDERS = {
    "wav2letter": wav2letter_paper,
    "small": wav2letter_small,
    "small_s3": wav2letter_small_s3,
    "small_s4": wav2letter_small_s4,
    "conformer_small": conformer_small,
}


def test_every_model_config_is_a_preset_whose_builder_builds_it():
    assert {path.stem for path in (Path(tmaps.conf.__file__).parent / "model").glob("*.yaml")} == set(PRESET_BUILDERS)
    for name, builder in PRESET_BUILDERS.items():
        from_config = build_model({**preset_config(name), "n_features": 40, "n_classes": 29})
        built = builder(n_features=40, n_classes=29)
        assert repr(built) == repr(from_config)
        assert {key: value.shape for key, value in built.state_dict().items()} == {key: value.shape for key, value in from_config.state_dict().items()}
    presets = r"\['conformer_small', 'small', 'small_s3', 'small_s4', 'wav2letter'\]"
    with pytest.raises(ValueError, match=rf"model preset 'huge' does not exist; presets are {presets}"):
        preset_config("huge")


def test_a_checkpoint_of_a_preset_holds_its_full_arguments_and_loads_from_them(tmp_path):
    module = ASRModule(model=preset_config("conformer_small"), alphabet=ENGLISH.chars, features={"n_mels": 40}, optim={"lr": 1e-3})
    stored = module.hparams["model"]
    assert stored == {**preset_config("conformer_small"), "n_features": 40, "n_classes": ENGLISH.n_classes}
    save_checkpoint({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, tmp_path / "preset.ckpt")
    loaded = load_checkpoint(tmp_path / "preset.ckpt")
    assert repr(loaded.model) == repr(conformer_small(n_classes=ENGLISH.n_classes))
    for key, value in module.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key



@pytest.mark.parametrize(("preset", "stride", "output_lengths"), [("small_s3", 3, [134, 101]), ("small_s4", 4, [100, 76])])
def test_the_subsampling_presets_are_small_with_other_strides_and_divide_the_output_frames(preset, stride, output_lengths):
    presets = {name: preset_config(name) for name in ("small", preset)}
    assert {**presets[preset], "strides": None} == {**presets["small"], "strides": None}
    model = build_model({**presets[preset], "n_features": 40, "n_classes": 29}).eval()
    log_probs, lengths = model(torch.randn(2, 40, 400), torch.tensor([400, 301]))
    assert model.stride == stride and lengths.tolist() == output_lengths and log_probs.shape == (2, output_lengths[0], 29)

# ---------------------------------------------------------------- padding invariance (fp32)

PRE_MASKING = Path(__file__).parent / "data" / "pre_masking"


@pytest.fixture(scope="module")
def utterances(synth_corpus_en, tmp_path_factory):
    """The shortest, a middle and the longest utterance of the tiny corpus, alone and as one padded batch."""
    datamodule = SpeechDataModule(
        source={"kind": "manifest", "path": str(synth_corpus_en), "splits": {"train": "train.jsonl"}},
        root=str(tmp_path_factory.mktemp("cache")),
    )
    datamodule.prepare_data()
    dataset = datamodule.dataset("train")
    by_duration = np.argsort(dataset.durations)
    chosen = [by_duration[0], by_duration[len(by_duration) // 2], by_duration[-1]]
    alone = [collate([dataset[int(i)]]) for i in chosen]
    batch = collate([dataset[int(i)] for i in chosen])
    lengths = batch["feature_lengths"].tolist()
    assert lengths[-1] > 2 * lengths[0], f"the utterances should differ in length: {lengths}"
    return alone, batch


def tiny_model(norm: str, n_features: int) -> Wav2Letter:
    torch.manual_seed(0)
    return Wav2Letter(n_features, ENGLISH.n_classes, channels=[32, 32, 32, 48], kernel_sizes=[11, 7, 7, 1], strides=[2, 1, 1, 1], norm=norm)


@pytest.mark.parametrize("norm", ["none", "batch", "layer"])
def test_an_utterance_decodes_alone_as_inside_a_padded_batch(utterances, norm):
    """fp32, eval mode: log-probabilities alone and batched agree to 1e-4 on every valid frame, transcripts are equal."""
    alone, batch = utterances
    model = tiny_model(norm, batch["features"].shape[1])
    with torch.no_grad():
        model.train()
        for _ in range(3):  # BatchNorm running statistics away from their initial 0 and 1
            model(batch["features"], batch["feature_lengths"])
        model.eval()
        log_probs, output_lengths = model(batch["features"], batch["feature_lengths"])
        for b, single in enumerate(alone):
            expected, (length,) = model(single["features"], single["feature_lengths"])
            assert output_lengths[b] == length == expected.shape[1]
            torch.testing.assert_close(log_probs[b, :length], expected[0], rtol=0, atol=1e-4)
            assert greedy(log_probs[b, :length]) == greedy(expected[0])


def greedy(log_probs: torch.Tensor) -> str:
    return ENGLISH.decode_ctc(log_probs.argmax(-1).tolist())


def test_batchnorm_statistics_in_training_are_those_of_the_valid_frames(utterances):
    """fp32, train mode: batch mean, unbiased running variance and normalized output of conv1 come from valid frames only."""
    _, batch = utterances
    model = tiny_model("batch", batch["features"].shape[1]).train()
    seen = {}
    model.conv1.conv.register_forward_hook(lambda module, inputs, output: seen.update(pre_norm=output.detach().double()))
    model.conv1.register_forward_hook(lambda module, inputs, output: seen.update(output=output.detach().double()))
    with torch.no_grad():
        model(batch["features"], batch["feature_lengths"])
    lengths = model.conv0.output_length(batch["feature_lengths"])
    valid = torch.cat([seen["pre_norm"][b, :, :n] for b, n in enumerate(lengths)], dim=1)  # (channels, valid frames)
    mean, variance = valid.mean(1), valid.var(1, correction=0)
    norm = model.conv1.norm
    momentum = norm.momentum
    torch.testing.assert_close(norm.running_mean.double(), momentum * mean, rtol=1e-5, atol=1e-6)
    unbiased = variance * valid.shape[1] / (valid.shape[1] - 1)
    torch.testing.assert_close(norm.running_var.double(), (1 - momentum) + momentum * unbiased, rtol=1e-5, atol=1e-6)
    weight, bias = norm.weight.detach().double()[:, None], norm.bias.detach().double()[:, None]
    for b, n in enumerate(lengths):
        expected = torch.relu((seen["pre_norm"][b, :, :n] - mean[:, None]) / torch.sqrt(variance[:, None] + norm.eps) * weight + bias)
        torch.testing.assert_close(seen["output"][b, :, :n], expected, rtol=1e-4, atol=1e-5)
        assert not seen["output"][b, :, n:].any(), "padded frames of a block's output are 0"


@pytest.mark.parametrize("norm", ["batch", "layer"])
def test_checkpoints_saved_before_padding_masks_load_and_give_their_old_outputs(norm):
    """fp32: a checkpoint written by tmaps 5927a59 (tests/data/pre_masking/make.py) loads with its keys unchanged, and
    on an unpadded utterance the masked model gives the log-probabilities the old code gave."""
    loaded = load_checkpoint(PRE_MASKING / f"{norm}.ckpt")
    reference = torch.load(PRE_MASKING / f"{norm}_reference.pt", weights_only=True)
    with torch.no_grad():
        log_probs, _ = loaded.model(reference["features"], torch.tensor([reference["features"].shape[-1]]))
    torch.testing.assert_close(log_probs, reference["log_probs"], rtol=0, atol=1e-5)

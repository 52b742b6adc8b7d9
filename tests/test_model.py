from pathlib import Path

import pytest
import torch
import torchaudio
import yaml

import tmaps.conf
from tmaps.models import Wav2Letter, wav2letter_paper, wav2letter_small


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


@pytest.mark.parametrize(("builder", "preset"), [(wav2letter_paper, "wav2letter"), (wav2letter_small, "small")])
def test_the_python_builders_are_the_config_presets(builder, preset):
    config = yaml.safe_load((Path(tmaps.conf.__file__).parent / "model" / f"{preset}.yaml").read_text())
    from_config = Wav2Letter(n_features=40, n_classes=29, **config)
    built = builder(n_features=40, n_classes=29)
    assert repr(built) == repr(from_config)
    assert {key: value.shape for key, value in built.state_dict().items()} == {key: value.shape for key, value in from_config.state_dict().items()}

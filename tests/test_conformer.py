"""ConformerCTC: shapes and lengths, the registry, and what the transfer recipes do with it."""

from __future__ import annotations

import pytest
import torch

from tmaps.models import ConformerCTC, build_model
from tmaps.text import Alphabet
from tmaps.transfer import TransferConfig, prepare_transfer
from tmaps.transfer.alphabet import swap_alphabet
from tmaps.transfer.layers import is_frozen


def tiny(n_classes: int = 29) -> ConformerCTC:
    torch.manual_seed(0)
    return build_model(
        {"arch": "conformer", "n_features": 40, "n_classes": n_classes, "subsample_channels": [32, 32], "d_model": 32,
         "n_blocks": 2, "n_heads": 4, "ffn_dim": 48, "conv_kernel_size": 7}
    ).eval()


def test_output_lengths_are_the_frames_each_utterance_gets_alone():
    model = tiny()
    lengths = torch.tensor([157, 100, 31])
    features = torch.randn(3, 40, 157) * (torch.arange(157) < lengths[:, None])[:, None, :]  # zero padded, as batches are
    log_probs, output_lengths = model(features, lengths)
    assert model.stride == 4 and log_probs.shape == (3, 40, 29) and output_lengths.tolist() == [40, 25, 8]
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(3, 40))
    for i, length in enumerate(lengths):
        alone, _ = model(features[i : i + 1, :, :length], lengths[i : i + 1])
        # Padded frames are masked in attention and zeroed before every convolution: no padding leaks in.
        torch.testing.assert_close(alone[0], log_probs[i, : output_lengths[i]], atol=1e-4, rtol=1e-4)


def test_layer_names_and_feed_forward_units():
    model = tiny()
    assert model.layer_names == ["conv0", "conv1", "block0", "block1", "head"]
    assert model.ffn_unit_names[0] == "block0.ffn1.sequential.1" and model.get_submodule("block0.ffn1.sequential.1").out_features == 48


def test_unknown_arch_and_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="model.arch must be one of \\['conformer', 'wav2letter'\\], got 'lstm'"):
        build_model({"arch": "lstm"})
    with pytest.raises(ValueError, match="d_model \\(30\\) must be a multiple of n_heads \\(4\\)"):
        ConformerCTC(d_model=30)


def test_transfer_swaps_the_alphabet_and_freezes_the_first_layers():
    english, german = Alphabet.for_language("en"), Alphabet.for_language("de")
    source = tiny(english.n_classes)
    target = swap_alphabet(tiny(english.n_classes), english, german)
    target.load_state_dict({**source.state_dict(), **{k: v for k, v in target.state_dict().items() if k.startswith("head.")}})
    shared = german.index("a")
    torch.testing.assert_close(target.head.weight[shared], source.head.weight[english.index("a")])
    frozen = prepare_transfer(target, german, TransferConfig(freeze_first=3))
    assert frozen == ["conv0", "conv1", "block0"]
    assert is_frozen(target, "block0") and not is_frozen(target, "block1")

"""CPU precision: trainer=cpu picks bf16 autocast only where the CPU computes bf16 natively; CTC stays fp32."""

from __future__ import annotations

import logging

import pytest
import torch
from hydra import compose, initialize_config_module

from tmaps.models import Wav2Letter
from tmaps.training.precision import PRECISION_VARIABLE, cpu_has_native_bf16, cpu_precision


@pytest.fixture
def fresh_cpu_precision():
    """``cpu_precision`` answers anew (its cache cleared), and later tests too, under whatever the environment says."""
    cpu_precision.cache_clear()
    yield cpu_precision
    cpu_precision.cache_clear()


def test_cpu_trainer_precision_is_bf16_exactly_where_bf16_is_native_and_says_why(caplog, monkeypatch, fresh_cpu_precision):
    monkeypatch.delenv(PRECISION_VARIABLE, raising=False)
    with caplog.at_level(logging.INFO, logger="tmaps.training.precision"):
        with initialize_config_module(config_module="tmaps.conf", version_base="1.3"):
            cfg = compose(config_name="train", overrides=["trainer=cpu", "paths.output_dir=."])
        precision = cfg.trainer.precision
    assert precision == ("bf16-mixed" if cpu_has_native_bf16() else "32-true")
    assert f"trainer precision {precision}" in caplog.text


@pytest.mark.parametrize("forced", ["32-true", "bf16-mixed"])
def test_the_environment_variable_forces_the_cpu_precision_whatever_the_cpu(forced, monkeypatch, caplog, fresh_cpu_precision):
    monkeypatch.setenv(PRECISION_VARIABLE, forced)
    with caplog.at_level(logging.INFO, logger="tmaps.training.precision"):
        with initialize_config_module(config_module="tmaps.conf", version_base="1.3"):
            cfg = compose(config_name="train", overrides=["trainer=cpu", "paths.output_dir=."])
        assert cfg.trainer.precision == forced
    assert f"trainer precision {forced}: forced by {PRECISION_VARIABLE}" in caplog.text


@pytest.mark.parametrize("value", ["bf16", "16-mixed", "32 "])
def test_an_invalid_forced_precision_is_one_line_naming_the_variable_and_the_choices(value, monkeypatch, fresh_cpu_precision):
    monkeypatch.setenv(PRECISION_VARIABLE, value)
    with pytest.raises(ValueError) as error:
        fresh_cpu_precision()
    assert str(error.value) == f"{PRECISION_VARIABLE}={value!r} is not a CPU precision: set it to one of 32-true, bf16-mixed, or unset it"


def test_an_explicit_precision_overrides_the_detection():
    with initialize_config_module(config_module="tmaps.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=["trainer=cpu", "trainer.precision=32-true", "paths.output_dir=."])
    assert cfg.trainer.precision == "32-true"


@pytest.mark.parametrize("norm", ["batch", "none"])
def test_under_bf16_autocast_convolutions_run_in_bf16_and_log_probs_and_ctc_in_fp32(norm):
    torch.manual_seed(0)
    model = Wav2Letter(n_features=8, n_classes=6, channels=[8, 8, 16], kernel_sizes=[5, 3, 1], strides=[2, 1, 1], norm=norm)
    conv_dtypes = []
    model.conv1.conv.register_forward_hook(lambda module, inputs, output: conv_dtypes.append(output.dtype))
    features, lengths = torch.randn(2, 8, 40), torch.tensor([40, 31])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        log_probs, output_lengths = model(features, lengths)
        loss = torch.nn.functional.ctc_loss(log_probs.transpose(0, 1), torch.tensor([[1, 2, 3], [4, 5, 0]]), output_lengths, torch.tensor([3, 2]))
    loss.backward()
    assert conv_dtypes == [torch.bfloat16]
    assert log_probs.dtype == loss.dtype == torch.float32
    # The log-softmax normalizer is fp32: probabilities sum to 1 far below bf16's resolution (~4e-3).
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(2, 20), atol=1e-5, rtol=0)
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters())

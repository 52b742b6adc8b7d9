"""Progress bars: on when asked (a terminal), quiet in captured output and when turned off."""

from __future__ import annotations

import pytest
import torch

from tmaps.introspect import NAP
from tmaps.models import Wav2Letter
from tmaps.progress import set_progress_bars


@pytest.fixture
def nap_pass():
    model = Wav2Letter(n_features=8, n_classes=5, channels=[4, 4], kernel_sizes=[3, 1], strides=[1, 1])
    batches = [
        {
            "features": torch.randn(2, 8, 30),
            "feature_lengths": torch.tensor([30, 20]),
            "records": [{"id": f"u{i}a", "speaker": "x"}, {"id": f"u{i}b", "speaker": "y"}],
        }
        for i in range(3)
    ]
    yield lambda: NAP(model, ["conv1"]).compute(batches, groups="speaker")
    set_progress_bars(None)


@pytest.mark.parametrize(("enabled", "shown"), [(True, True), (False, False), (None, False)], ids=["on", "off", "not-a-terminal"])
def test_nap_pass_shows_a_bar_only_when_enabled_or_on_a_terminal(enabled, shown, nap_pass, capsys):
    set_progress_bars(enabled)
    profiles = nap_pass()
    assert profiles.groups == ["x", "y"]
    assert ("NAP pass" in capsys.readouterr().err) == shown

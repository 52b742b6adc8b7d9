"""Log-mel features (frame layout, per-utterance normalization) and SpecAugment."""

from __future__ import annotations

import pytest
import torch

from tmaps.data.dataset import load_audio
from tmaps.data.features import FRAME_RATE, SAMPLE_RATE, LogMel, SpecAugment, num_frames
from tmaps.data.manifest import read_manifest


@pytest.fixture(scope="module")
def waveforms(synth_corpus_en) -> list[torch.Tensor]:
    return [load_audio(record["audio"]) for record in read_manifest(synth_corpus_en / "dev.jsonl")[:4]]


def test_frames_follow_the_design_layout(waveforms):
    log_mel = LogMel(n_mels=40)
    for waveform in waveforms:
        features = log_mel(waveform)
        assert features.shape == (40, len(waveform) // 160 + 1) == (40, num_frames(len(waveform)))
    assert FRAME_RATE == 100


def test_frame_n_is_centred_at_n_over_100_seconds():
    onset_s = 0.5
    time = torch.arange(SAMPLE_RATE) / SAMPLE_RATE
    waveform = torch.where(time >= onset_s, torch.sin(2 * torch.pi * 1000 * time), torch.zeros(()))
    loudness = LogMel(n_mels=40, log_floor=1e-10)(waveform).mean(dim=0)
    # Frame n covers n/100 s +- 12.5 ms: the first frame that reaches the onset is 0.5 s - 12.5 ms away.
    first_loud = int(torch.nonzero(loudness > loudness.min() + 1).min())
    assert abs(first_loud / FRAME_RATE - (onset_s - 0.0125)) <= 1 / FRAME_RATE


def test_each_band_is_normalized_per_utterance(waveforms):
    for waveform in waveforms:
        features = LogMel(n_mels=64)(waveform)
        torch.testing.assert_close(features.mean(dim=1), torch.zeros(64), atol=1e-4, rtol=0)
        torch.testing.assert_close(features.std(dim=1, unbiased=False), torch.ones(64), atol=1e-3, rtol=0)


def test_digital_silence_stays_finite():
    waveform = torch.cat([torch.zeros(8000), 0.1 * torch.randn(8000)])
    assert torch.isfinite(LogMel(n_mels=40)(waveform)).all()


def test_batched_statistics_use_valid_frames_only(waveforms):
    log_mel = LogMel(n_mels=40)
    lengths = torch.tensor([len(waveform) for waveform in waveforms])
    batch = torch.nn.utils.rnn.pad_sequence(waveforms, batch_first=True)
    batched = log_mel(batch, lengths)
    for waveform, features, length in zip(waveforms, batched, lengths):
        frames = num_frames(int(length))
        valid = features[:, :frames]
        torch.testing.assert_close(valid.mean(dim=1), torch.zeros(40), atol=1e-4, rtol=0)
        torch.testing.assert_close(valid.std(dim=1, unbiased=False), torch.ones(40), atol=1e-3, rtol=0)
        assert not features[:, frames:].any()
        # The last two frames see zero padding instead of the reflection through the centred
        # window, which moves the statistics a little; the frames before are the same up to that.
        alone = log_mel(waveform)[:, : frames - 2]
        for band, alone_band in zip(valid[:, : frames - 2], alone):
            assert torch.corrcoef(torch.stack([band, alone_band]))[0, 1] > 0.999


def test_bad_feature_arguments_are_named():
    with pytest.raises(ValueError, match="n_mels"):
        LogMel(n_mels=0)
    with pytest.raises(ValueError, match="spec_augment.time_width"):
        SpecAugment(time_width=-1)


def test_spec_augment_masks_bands_and_frames_within_the_widths(waveforms):
    torch.manual_seed(0)
    features = LogMel(n_mels=40)(waveforms[0])
    augment = SpecAugment(freq_masks=1, freq_width=8, time_masks=1, time_width=20)
    masked_bands, masked_frames = [], []
    for _ in range(50):
        zero = augment(features) == 0
        masked_bands.append(int(zero.all(dim=1).sum()))
        masked_frames.append(int(zero.all(dim=0).sum()))
    assert max(masked_bands) <= 8 and max(masked_frames) <= 20
    assert sum(masked_bands) > 0 and sum(masked_frames) > 0
    assert len(set(masked_frames)) > 1  # new masks on every call


def test_spec_augment_is_the_identity_in_eval_mode_or_without_masks(waveforms):
    features = LogMel(n_mels=40)(waveforms[0])
    assert torch.equal(SpecAugment().eval()(features), features)
    assert torch.equal(SpecAugment(freq_masks=0, time_masks=0)(features), features)


def test_a_long_waveform_computed_in_chunks_gives_the_features_of_one_pass():
    """The transcriber's memory bound: the spectrogram a chunk at a time, reflection padding at the file's ends alone."""
    waveform = torch.randn(16_000 * 7 + 37, generator=torch.Generator().manual_seed(0))
    log_mel = LogMel(n_mels=40)
    whole = log_mel(waveform)
    for chunk_frames in (1, 100, 700, 701):
        torch.testing.assert_close(log_mel(waveform, chunk_frames=chunk_frames), whole, rtol=0, atol=1e-4)

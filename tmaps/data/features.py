"""Log-mel features with per-utterance normalization, and SpecAugment.

The frame layout is fixed by docs/design.md: 16 kHz audio, ``n_fft=400`` (25 ms),
``hop_length=160`` (10 ms), ``center=True``, so that feature frame ``n`` is centred at ``n / 100`` s.
"""

from __future__ import annotations

import torch
import torchaudio
from torch import Tensor, nn

SAMPLE_RATE = 16_000
N_FFT = 400
HOP_LENGTH = 160
FRAME_RATE = SAMPLE_RATE // HOP_LENGTH


def num_frames(num_samples: int | Tensor) -> int | Tensor:
    """Feature frames of a waveform of ``num_samples`` samples (``center=True`` adds one)."""
    return num_samples // HOP_LENGTH + 1


class LogMel(nn.Module):
    """Log-mel spectrogram, normalized to zero mean and unit variance per utterance and band.

    Args:
        n_mels: mel bands.
        log_floor: power below which the spectrogram is clipped before the log (digital
            silence would otherwise give ``-inf``).

    Shapes:
        ``forward(waveform, lengths)`` takes ``waveform (..., samples)`` at 16 kHz and optional
        ``lengths (batch,)`` in samples for a zero-padded ``(batch, samples)`` batch, and returns
        ``(..., n_mels, frames)`` with ``frames = samples // 160 + 1``. With ``lengths``, the
        statistics use the valid frames only (``num_frames(lengths)``) and padded frames are 0.
    """

    def __init__(self, n_mels: int = 40, log_floor: float = 1e-6) -> None:
        super().__init__()
        if n_mels < 1:
            raise ValueError(f"n_mels must be positive, got {n_mels}")
        if log_floor <= 0:
            raise ValueError(f"log_floor must be positive, got {log_floor}")
        self.n_mels = n_mels
        self.log_floor = log_floor
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP_LENGTH, center=True, n_mels=n_mels
        )

    @property
    def config(self) -> dict:
        """The constructor arguments; ``LogMel(**config)`` rebuilds the same features."""
        return {"n_mels": self.n_mels, "log_floor": self.log_floor}

    def forward(self, waveform: Tensor, lengths: Tensor | None = None, chunk_frames: int | None = None) -> Tensor:
        """With ``chunk_frames``, a 1-D ``waveform``'s spectrogram is computed that many frames at a
        time, the same frames (to float rounding) without holding the whole file's spectrogram:
        about 17 bytes per sample at once (0.16 GB for 10 minutes) against the 40 mel bands' 1.6.
        """
        if chunk_frames is not None and waveform.dim() == 1 and num_frames(waveform.shape[-1]) > chunk_frames:
            features = self._chunked_log_mel(waveform, chunk_frames)
        else:
            features = self.mel(waveform).clamp_min(self.log_floor).log()
        if lengths is None:
            valid = torch.ones_like(features[..., :1, :])
        else:
            frames = torch.arange(features.shape[-1], device=features.device)
            valid = (frames < num_frames(lengths)[:, None]).unsqueeze(1).to(features.dtype)
        count = valid.sum(dim=-1, keepdim=True).clamp_min(1)
        mean = (features * valid).sum(dim=-1, keepdim=True) / count
        variance = ((features - mean) ** 2 * valid).sum(dim=-1, keepdim=True) / count
        return (features - mean) / (variance + 1e-5).sqrt() * valid

    def _chunked_log_mel(self, waveform: Tensor, chunk_frames: int) -> Tensor:
        """``self.mel(waveform)``'s log of a 1-D waveform, ``chunk_frames`` frames a pass: the reflection padding of
        ``center=True`` once, then uncentred frames of overlapping slices."""
        spectrogram = self.mel.spectrogram
        padded = torch.nn.functional.pad(waveform[None, None], (N_FFT // 2, N_FFT // 2), mode=spectrogram.pad_mode)[0, 0]
        n_frames = num_frames(waveform.shape[-1])
        pieces = []
        for start in range(0, n_frames, chunk_frames):
            stop = min(n_frames, start + chunk_frames)
            power = torchaudio.functional.spectrogram(
                padded[start * HOP_LENGTH : (stop - 1) * HOP_LENGTH + N_FFT], spectrogram.pad, spectrogram.window, N_FFT, HOP_LENGTH,
                spectrogram.win_length, spectrogram.power, spectrogram.normalized, center=False, onesided=spectrogram.onesided,
            )
            pieces.append(self.mel.mel_scale(power).clamp_min(self.log_floor).log())
        return torch.cat(pieces, dim=-1)


class SpecAugment(nn.Module):
    """SpecAugment masking (Park et al., 2019) with torchaudio's masks; identity in eval mode.

    Masked values are 0, the mean of normalized features.

    Args:
        freq_masks: frequency masks per utterance.
        freq_width: largest frequency mask, in mel bands.
        time_masks: time masks per utterance.
        time_width: largest time mask, in frames.

    Shapes:
        ``(..., n_mels, frames)`` in and out; each call draws new masks.
    """

    def __init__(self, freq_masks: int = 2, freq_width: int = 8, time_masks: int = 2, time_width: int = 20) -> None:
        super().__init__()
        for name, value in (("freq_masks", freq_masks), ("freq_width", freq_width), ("time_masks", time_masks), ("time_width", time_width)):
            if value < 0:
                raise ValueError(f"spec_augment.{name} must be >= 0, got {value}")
        self.masks = nn.Sequential(
            *[torchaudio.transforms.FrequencyMasking(freq_width) for _ in range(freq_masks)],
            *[torchaudio.transforms.TimeMasking(time_width) for _ in range(time_masks)],
        )

    def forward(self, features: Tensor) -> Tensor:
        return self.masks(features) if self.training else features

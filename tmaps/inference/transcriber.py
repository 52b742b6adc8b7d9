"""Transcribing audio of any length: features once per file, the model in overlapping chunks.

The model is fully convolutional, so an output frame depends only on the input frames in its
receptive field. Each chunk is run with ``context`` extra feature frames on both sides, at least
the receptive field's reach, and only the output frames of its own span are kept: the stitched
log-probabilities equal those of one pass over the whole file, while the model's activations
(the memory that grows with length) are bounded by the chunk size. Features are normalized over
the whole file, as in training (40 numbers per 10 ms, small next to the audio), from a spectrogram
computed a minute at a time: held whole, it was most of the memory a long file took.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import soundfile
import torch
from torch import Tensor, nn

from tmaps.data.dataset import load_audio
from tmaps.data.features import FRAME_RATE, N_FFT, SAMPLE_RATE, LogMel
from tmaps.inference.decoding import GreedyDecoder
from tmaps.introspect.alignment import align_utterance
from tmaps.introspect.frames import FrameMap, window_of
from tmaps.text import Alphabet

log = logging.getLogger(__name__)

Decoder = Callable[[Tensor, Tensor], list[str]]

FEATURE_CHUNK_FRAMES = 60 * FRAME_RATE  # a minute's spectrogram at a time: 16 MB
# The spectrogram's centred frames reflect N_FFT // 2 samples at each end, so a file needs more than that.
MIN_SAMPLES = N_FFT // 2 + 1


def audio_extensions() -> set[str]:
    """File suffixes (lower case, with the dot) of the formats soundfile reads."""
    return {f".{extension.lower()}" for extension in soundfile.available_formats()} | {".oga", ".opus"}


def audio_files(inputs: Iterable[str | os.PathLike]) -> tuple[list[Path], list[str]]:
    """The files to transcribe: given files as they are, folders searched recursively for audio.

    Returns the files in order and a message for every input that yields none (missing path,
    folder without audio), so that the caller can report them and go on with the others.
    """
    extensions = audio_extensions()
    files, problems = [], []
    for entry in map(Path, inputs):
        if entry.is_dir():
            found = sorted(path for path in entry.rglob("*") if path.is_file() and path.suffix.lower() in extensions)
            if not found:
                problems.append(f"{entry}: folder holds no audio file ({', '.join(sorted(extensions))})")
            files += found
        elif entry.is_file():
            files.append(entry)
        else:
            problems.append(f"{entry}: no such file or folder")
    return files, problems


def read_audio(path: str | os.PathLike) -> Tensor:
    """Mono 16 kHz waveform of an audio file; ``ValueError`` naming the file if it cannot be transcribed:
    undecodable, without samples, too short for one spectrogram frame, or with NaN or infinite samples."""
    try:
        waveform = load_audio(path)
    except (soundfile.SoundFileError, RuntimeError, OSError) as error:
        raise ValueError(f"{path}: cannot decode audio ({error})") from None
    if waveform.numel() == 0:
        raise ValueError(f"{path}: holds no audio samples")
    if waveform.numel() < MIN_SAMPLES:
        raise ValueError(
            f"{path}: too short to transcribe: {waveform.numel()} samples ({1000 * waveform.numel() / SAMPLE_RATE:.1f} ms) at 16 kHz, "
            f"at least {MIN_SAMPLES} ({1000 * MIN_SAMPLES / SAMPLE_RATE:.1f} ms) needed"
        )
    finite = torch.isfinite(waveform)
    if not bool(finite.all()):
        bad = (~finite).nonzero()[:, 0]
        kinds = " and ".join(kind for kind, present in (("NaN", waveform.isnan().any()), ("infinite", waveform.isinf().any())) if present)
        raise ValueError(
            f"{path}: {bad.numel()} of {waveform.numel()} samples are not finite ({kinds}, the first at {float(bad[0]) / SAMPLE_RATE:.3f} s at 16 kHz)"
        )
    return waveform


class Transcriber:
    """Waveforms to transcripts with a trained CTC model.

    Args:
        model: a ``Wav2Letter`` (or any model ``(features, lengths) -> (log_probs, lengths)``
            whose time axis runs through ``Conv1d`` layers only).
        alphabet: its output classes.
        features: the feature config stored with the model (``n_mels``, ``log_floor``).
        decoder: ``decoder(log_probs, lengths) -> texts``; greedy by default.
        chunk_s: seconds of audio per model pass; ``None`` runs whole files at once.
        device: where the model runs.
    """

    def __init__(
        self,
        model: nn.Module,
        alphabet: Alphabet,
        features: Mapping,
        decoder: Decoder | None = None,
        chunk_s: float | None = 30.0,
        device: str | torch.device = "cpu",
    ) -> None:
        self.model = model.to(device).eval()
        self.alphabet = alphabet
        self.log_mel = LogMel(**{key: features[key] for key in ("n_mels", "log_floor") if key in features}).to(device)
        self.decoder = decoder or GreedyDecoder(alphabet)
        self.device = torch.device(device)
        windows = tuple(window for module in model.modules() if (window := window_of(module)) is not None)
        self.output_map = FrameMap.from_windows(windows)
        self.stride = self.output_map.stride
        reach, stride = 0, 1
        for window in windows:
            span = window.dilation * (window.kernel - 1)
            reach += stride * max(window.pad_left, span - window.pad_left)
            stride *= window.stride
        self.context = math.ceil(reach / self.stride) * self.stride
        if chunk_s is not None and chunk_s * FRAME_RATE < self.stride:
            raise ValueError(f"chunk_s={chunk_s} is shorter than one output frame")
        self.chunk_frames = None if chunk_s is None else int(chunk_s * FRAME_RATE) // self.stride * self.stride

    @torch.no_grad()
    def log_probs(self, waveform: Tensor) -> Tensor:
        """``(T', n_classes)`` log-probabilities of a mono 16 kHz ``waveform (samples,)``."""
        features = self.log_mel(waveform.to(self.device), chunk_frames=FEATURE_CHUNK_FRAMES)
        n_frames = features.shape[-1]
        n_outputs = int(self.model.output_lengths(torch.tensor([n_frames]))[0]) if hasattr(self.model, "output_lengths") else None
        chunk = self.chunk_frames or math.ceil(n_frames / self.stride) * self.stride
        pieces = []
        for start in range(0, n_frames, chunk):
            low, high = max(0, start - self.context), min(n_frames, start + chunk + self.context)
            log_probs, _ = self.model(features[None, :, low:high], torch.tensor([high - low], device=self.device))
            first = (start - low) // self.stride
            pieces.append(log_probs[0, first : first + chunk // self.stride])
        log_probs = torch.cat(pieces)
        return log_probs[:n_outputs] if n_outputs is not None else log_probs

    def transcribe(self, waveform: Tensor, timings: bool = False) -> dict:
        """``{"text", "duration"}`` of one waveform, plus ``"words"`` and ``"characters"``
        (``[label, start_s, end_s]``, from CTC forced alignment of the transcript to the model's
        output) when ``timings``."""
        log_probs = self.log_probs(waveform)
        (text,) = self.decoder(log_probs[None], torch.tensor([log_probs.shape[0]]))
        result = {"text": text, "duration": round(waveform.numel() / SAMPLE_RATE, 3)}
        if timings:
            segments = align_utterance(log_probs, text, self.alphabet, self.output_map, FRAME_RATE)
            # Edge frames reach half a frame beyond the audio; timings stay inside the file.
            result |= {
                kind: [[label, max(0.0, start), min(result["duration"], end)] for label, start, end in spans]
                for kind, spans in segments.items()
            }
        return result

    def transcribe_file(self, path: str | os.PathLike, timings: bool = False) -> dict:
        """:meth:`transcribe` of an audio file (any rate, channels averaged); ``ValueError`` naming a bad file."""
        return {"file": str(path), **self.transcribe(read_audio(path), timings)}

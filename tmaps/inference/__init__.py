"""Running a trained model: chunked transcription of audio files, CTC decoders, n-gram LMs, export.

Plain PyTorch (no Lightning or Hydra): ``Transcriber(model, alphabet, features)`` turns
waveforms into transcripts with optional word and character timings.
"""

from tmaps.inference.decoding import BeamSearchDecoder, GreedyDecoder, build_decoder
from tmaps.inference.transcriber import Transcriber, audio_files

__all__ = ["BeamSearchDecoder", "GreedyDecoder", "Transcriber", "audio_files", "build_decoder"]

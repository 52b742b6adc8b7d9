"""The synthetic speech corpus: espeak-ng speech with word and phoneme segments."""

from tmaps.data.synth.config import SynthConfig
from tmaps.data.synth.corpus import corpus_dir, synthesize_corpus
from tmaps.data.synth.espeak import AlignmentError, Espeak, SynthesizedUtterance, check_voice, voice_gender
from tmaps.data.synth.texts import vocabulary

__all__ = [
    "AlignmentError",
    "Espeak",
    "SynthConfig",
    "SynthesizedUtterance",
    "check_voice",
    "corpus_dir",
    "synthesize_corpus",
    "vocabulary",
    "voice_gender",
]

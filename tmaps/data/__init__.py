"""Corpora, features and data loading: everything between audio files and the batch dict."""

from tmaps.data.datamodule import SpeechDataModule
from tmaps.data.dataset import DurationBatchSampler, SpeechDataset, check_records, collate, filter_records, load_audio
from tmaps.data.features import FRAME_RATE, SAMPLE_RATE, LogMel, SpecAugment, num_frames
from tmaps.data.manifest import SPLITS, read_manifest, write_manifest
from tmaps.data.readers import build_corpus, read_common_voice, read_generic_manifest, read_librispeech

__all__ = [
    "FRAME_RATE",
    "SAMPLE_RATE",
    "SPLITS",
    "DurationBatchSampler",
    "LogMel",
    "SpecAugment",
    "SpeechDataModule",
    "SpeechDataset",
    "build_corpus",
    "check_records",
    "collate",
    "filter_records",
    "load_audio",
    "num_frames",
    "read_common_voice",
    "read_generic_manifest",
    "read_librispeech",
    "read_manifest",
    "write_manifest",
]

"""Corpora, features and data loading: everything between audio files and the batch dict.

Names are imported on first use, so that ``import tmaps.data.features`` (or a reader) does not
pay for Lightning, which the data module needs.
"""

from importlib import import_module

_EXPORTS = {
    "SpeechDataModule": "datamodule",
    "Utterances": "datamodule",
    "checkpoint_datamodule": "datamodule",
    "manifest_loader": "datamodule",
    "DurationBatchSampler": "dataset",
    "SpeechDataset": "dataset",
    "check_records": "dataset",
    "collate": "dataset",
    "filter_records": "dataset",
    "load_audio": "dataset",
    "FRAME_RATE": "features",
    "SAMPLE_RATE": "features",
    "LogMel": "features",
    "SpecAugment": "features",
    "num_frames": "features",
    "SPLITS": "manifest",
    "read_manifest": "manifest",
    "write_manifest": "manifest",
    "build_corpus": "readers",
    "read_common_voice": "readers",
    "read_generic_manifest": "readers",
    "read_librispeech": "readers",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tmaps.data' has no attribute {name!r}")
    return getattr(import_module(f"tmaps.data.{_EXPORTS[name]}"), name)

"""A trained model as ONNX, as a ``torch.export`` program, and as a plain state dict.

All three take ``features (batch, n_mels, time)`` and ``lengths (batch,)`` (int64, frames) and
return ``log_probs (batch, time', n_classes)`` and ``output_lengths (batch,)``; batch and time
are dynamic. ``model.json`` beside them says how to make the features and read the classes:
the alphabet (class 0 is the CTC blank, class ``i`` the ``i``-th character), the log-mel
settings and the model's constructor arguments.

The state dict file is ``{"model": constructor arguments, "alphabet", "features",
"state_dict"}``, saved with ``torch.save`` and loadable with ``weights_only=True``;
``tmaps.models.build_model(stored["model"]).load_state_dict(stored["state_dict"])`` rebuilds
the model without Lightning (:func:`load_exported_state_dict`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.export import Dim

from tmaps.checkpoint import check_writable
from tmaps.data.features import HOP_LENGTH, N_FFT, SAMPLE_RATE
from tmaps.extras import require
from tmaps.models import build_model
from tmaps.text import Alphabet

FORMATS = ("onnx", "program", "state_dict")
FILE_NAMES = {"onnx": "model.onnx", "program": "model.pt2", "state_dict": "model_state.pt"}
CARD_NAME = "model.json"
INPUT_NAMES = ("features", "lengths")
OUTPUT_NAMES = ("log_probs", "output_lengths")
# Shortest input the exported graphs accept, in feature frames (0.16 s). A lower bound keeps
# torch.export from specializing on tiny sizes where a convolution's output would be empty.
MIN_FRAMES = 16


def example_inputs(n_features: int, lengths: Iterable[int] = (400, 250)) -> tuple[Tensor, Tensor]:
    """A zero-padded random batch ``(features, lengths)`` to trace with."""
    lengths = torch.tensor(list(lengths), dtype=torch.long)
    features = torch.randn(len(lengths), n_features, int(lengths.max()))
    features *= (torch.arange(features.shape[-1]) < lengths[:, None])[:, None]
    return features, lengths


def _dynamic_shapes() -> dict:
    batch, time = Dim("batch", min=1), Dim("time", min=MIN_FRAMES)
    return {"features": {0: batch, 2: time}, "lengths": {0: batch}}


def export_program(model: nn.Module, path: str | os.PathLike, example: tuple[Tensor, Tensor]) -> Path:
    """Save ``torch.export.export(model)`` with dynamic batch and time; ``torch.export.load`` reads it."""
    program = torch.export.export(model.eval(), example, dynamic_shapes=_dynamic_shapes())
    torch.export.save(program, path)
    return Path(path)


def export_onnx(model: nn.Module, path: str | os.PathLike, example: tuple[Tensor, Tensor]) -> Path:
    """Write an ONNX model with the dynamo exporter (needs the ``export`` extra: onnx, onnxscript)."""
    require("onnxscript", extra="export", feature="ONNX export")
    torch.onnx.export(
        model.eval(),
        example,
        str(path),
        dynamo=True,
        input_names=list(INPUT_NAMES),
        output_names=list(OUTPUT_NAMES),
        dynamic_shapes=_dynamic_shapes(),
        verbose=False,
    )
    return Path(path)


def export_state_dict(model: nn.Module, model_arguments: Mapping, alphabet: Alphabet, features: Mapping, path: str | os.PathLike) -> Path:
    torch.save(
        {"model": dict(model_arguments), "alphabet": alphabet.chars, "features": dict(features), "state_dict": model.state_dict()}, path
    )
    return Path(path)


def load_exported_state_dict(path: str | os.PathLike) -> tuple[nn.Module, Alphabet, dict]:
    """The model (in eval mode), alphabet and feature config of an exported state dict file."""
    stored = torch.load(path, map_location="cpu", weights_only=True)
    missing = [key for key in ("model", "alphabet", "features", "state_dict") if key not in stored]
    if missing:
        raise ValueError(f"{path} is not an exported tmaps state dict: it lacks {missing}")
    model = build_model(stored["model"])
    model.load_state_dict(stored["state_dict"])
    return model.eval(), Alphabet(stored["alphabet"]), stored["features"]


def model_card(model_arguments: Mapping, alphabet: Alphabet, features: Mapping) -> dict:
    """What ``model.json`` holds: how to make the inputs and read the outputs."""
    return {
        "inputs": {"features": "(batch, n_mels, time) float32 log-mel, normalized per utterance and band", "lengths": "(batch,) int64 frames"},
        "outputs": {"log_probs": "(batch, time', n_classes) float32", "output_lengths": "(batch,) int64"},
        "classes": ["<blank>", *alphabet.chars],
        "features": {**features, "sample_rate": SAMPLE_RATE, "n_fft": N_FFT, "hop_length": HOP_LENGTH, "center": True},
        "model": dict(model_arguments),
        "min_frames": MIN_FRAMES,
    }


def export_model(
    model: nn.Module,
    model_arguments: Mapping,
    alphabet: Alphabet,
    features: Mapping,
    output_dir: str | os.PathLike,
    formats: Iterable[str] = FORMATS,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write the requested formats and ``model.json`` into ``output_dir``; return their paths by format.

    Raises:
        ValueError: an unknown format.
        FileExistsError: ``output_dir`` holds an earlier export and ``overwrite`` is false.
        CheckpointWriteError: ``output_dir`` cannot be created or written (a file is in its place, or it is read-only).
    """
    formats = list(formats)
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown export formats {unknown}; formats are {FORMATS}")
    output_dir = Path(output_dir)
    earlier = [name for name in [*(FILE_NAMES[kind] for kind in formats), CARD_NAME] if (output_dir / name).exists()]
    if earlier and not overwrite:
        raise FileExistsError(f"the folder {output_dir} holds an earlier export ({', '.join(earlier)}); set overwrite=true to replace it")
    check_writable(output_dir, what="exported models")
    model = model.eval()
    example = example_inputs(model_arguments["n_features"])
    paths = {}
    for kind in formats:
        path = output_dir / FILE_NAMES[kind]
        if kind == "onnx":
            paths[kind] = export_onnx(model, path, example)
        elif kind == "program":
            paths[kind] = export_program(model, path, example)
        else:
            paths[kind] = export_state_dict(model, model_arguments, alphabet, features, path)
    card = output_dir / CARD_NAME
    card.write_text(json.dumps(model_card(model_arguments, alphabet, features), indent=1, ensure_ascii=False), encoding="utf-8")
    paths["card"] = card
    return paths


def run_exported(path: str | os.PathLike, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """Run an exported ``.onnx`` (onnxruntime), ``.pt2`` or state dict file on a batch."""
    path = Path(path)
    if path.suffix == ".onnx":
        onnxruntime = require("onnxruntime", extra="export", feature="running ONNX models")
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        log_probs, output_lengths = session.run(list(OUTPUT_NAMES), {"features": features.numpy(), "lengths": lengths.numpy()})
        return torch.from_numpy(log_probs), torch.from_numpy(output_lengths)
    with torch.no_grad():
        if path.suffix == ".pt2":
            return torch.export.load(path).module()(features, lengths)
        model, _, _ = load_exported_state_dict(path)
        return model(features, lengths)

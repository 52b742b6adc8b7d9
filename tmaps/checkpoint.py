"""Reading tmaps checkpoints without executing code, writing them atomically, and explaining mismatches (plain PyTorch, no Lightning)."""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import re
import secrets
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from tmaps.models import build_model, model_config
from tmaps.text import Alphabet
from tmaps.topo import Grid, topographic_grids


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the model or alphabet it is loaded into."""


class CheckpointWriteError(OSError):
    """A checkpoint or its folder cannot be written (no permission, full disk, a file in the way)."""


@dataclass
class LoadedCheckpoint:
    """What a tmaps checkpoint holds: enough to rebuild the model and its inputs.

    Attributes:
        grids: the grid of every layer the checkpoint's ``topo`` config trained topographically
            (:func:`tmaps.topo.topographic_grids`); ``{}`` for a model trained without.
    """

    path: Path
    model: nn.Module
    alphabet: Alphabet
    features: dict
    hyper_parameters: dict
    global_step: int
    grids: dict[str, Grid]


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """The raw checkpoint dict, loaded with ``weights_only=True``; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if not _is_torch_archive(path):
        raise ValueError(f"{path} is not a checkpoint: torch.save writes a zip archive holding data.pkl, and this file is not one")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's message advises loading with weights_only=False, which would run code from the file.
        found = re.search(r"GLOBAL (\S+)", str(error))
        raise ValueError(
            f"checkpoint {path} holds {found.group(1) if found else 'Python objects'}, not only tensors and plain values, "
            "so it is not a tmaps checkpoint (they are read weights-only, which never runs code from the file)"
        ) from None
    except (RuntimeError, EOFError, OSError) as error:
        raise ValueError(f"checkpoint {path} is damaged or truncated: {error}") from error
    missing = [key for key in ("state_dict", "hyper_parameters") if key not in checkpoint]
    hyper_parameters = checkpoint.get("hyper_parameters", {})
    missing += [f"hyper_parameters.{key}" for key in ("model", "alphabet", "features") if key not in hyper_parameters]
    if missing:
        raise ValueError(f"checkpoint {path} is not a tmaps checkpoint: it lacks {missing}")
    return checkpoint


def _is_torch_archive(path: Path) -> bool:
    """Whether ``path`` is a zip archive holding ``<name>/data.pkl``, as ``torch.save`` writes."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/data.pkl") for name in archive.namelist())


def model_state_dict(checkpoint: Mapping) -> dict[str, torch.Tensor]:
    """The model weights of a LightningModule checkpoint (``model.`` prefix removed)."""
    prefix = "model."
    return {key[len(prefix) :]: value for key, value in checkpoint["state_dict"].items() if key.startswith(prefix)}


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Rebuild the model, alphabet and feature config stored in a tmaps checkpoint."""
    checkpoint = read_checkpoint(path, map_location)
    hyper_parameters = checkpoint["hyper_parameters"]
    model = build_model(hyper_parameters["model"])
    model.load_state_dict(model_state_dict(checkpoint))
    model.eval()
    return LoadedCheckpoint(
        path=Path(path),
        model=model,
        alphabet=Alphabet(hyper_parameters["alphabet"]),
        features=dict(hyper_parameters["features"]),
        hyper_parameters=hyper_parameters,
        global_step=int(checkpoint.get("global_step", 0)),
        grids=topographic_grids(model, hyper_parameters.get("topo")),
    )


def describe_differences(expected: Mapping, found: Mapping, prefix: str = "") -> list[str]:
    """Lines ``key: expected X, checkpoint has Y`` for every leaf that differs."""
    lines = []
    for key in sorted(set(expected) | set(found), key=str):
        name = f"{prefix}{key}"
        if key not in found:
            lines.append(f"{name}: expected {expected[key]!r}, checkpoint lacks it")
        elif key not in expected:
            lines.append(f"{name}: not expected, checkpoint has {found[key]!r}")
        elif isinstance(expected[key], Mapping) and isinstance(found[key], Mapping):
            lines += describe_differences(expected[key], found[key], prefix=f"{name}.")
        elif _normalized(expected[key]) != _normalized(found[key]):
            lines.append(f"{name}: expected {expected[key]!r}, checkpoint has {found[key]!r}")
    return lines


def _normalized(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def check_compatible(path: str | os.PathLike, expected: Mapping) -> None:
    """Raise ``CheckpointMismatchError`` listing what differs between a checkpoint and ``expected``.

    ``expected`` holds the ``model`` constructor arguments and the ``alphabet`` characters
    that the current run would build.
    """
    hyper_parameters = read_checkpoint(path)["hyper_parameters"]
    found = {key: hyper_parameters[key] for key in expected}
    if "model" in found:
        found["model"] = model_config(found["model"])
    differences = describe_differences(expected, found)
    if differences:
        raise CheckpointMismatchError(
            f"checkpoint {path} does not match this run's model and alphabet:\n  " + "\n  ".join(differences)
        )


def save_checkpoint(checkpoint: Mapping, path: str | os.PathLike) -> None:
    """``torch.save`` into a file beside ``path``, renamed to ``path`` once complete.

    A write that fails (no permission, full disk) raises ``CheckpointWriteError`` naming the
    file and its folder, and leaves whatever ``path`` held before untouched: never a
    truncated checkpoint under the final name.
    """
    path = Path(path)
    # Serialized first: torch.save into a file that fails midway masks the OSError with a RuntimeError.
    serialized = io.BytesIO()
    torch.save(checkpoint, serialized)
    # Opened by name rather than by tempfile, which would give the checkpoint mode 0600 instead of the umask's.
    temporary = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with temporary.open("xb") as out:
            out.write(serialized.getbuffer())
            out.flush()
            os.fsync(out.fileno())
        temporary.replace(path)
    except OSError as error:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        raise CheckpointWriteError(f"cannot write checkpoint {path} into the folder {path.parent}: {error}") from error


def check_writable(folder: str | os.PathLike, what: str = "checkpoints") -> None:
    """Create ``folder`` and write a probe file in it; raise ``CheckpointWriteError`` naming it (and ``what`` goes there) if that fails."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except FileExistsError as error:
        raise CheckpointWriteError(f"{what} cannot be written into the folder {folder}: a file of that name is in the way") from error
    except OSError as error:
        raise CheckpointWriteError(f"{what} cannot be written into the folder {folder}: {error}") from error


def mismatched_tensors(
    expected: Mapping[str, Tensor], found: Mapping[str, Tensor], expected_as: str = "model", found_as: str = "checkpoint"
) -> list[str]:
    """Lines naming every tensor that is missing, unexpected or of another shape.

    Args:
        expected: the tensors that are wanted (e.g. the model's state dict).
        found: the tensors at hand (e.g. a checkpoint's).
        expected_as, found_as: what the two are called in the lines.
    """
    lines = [f"{key}: missing from the {found_as}" for key in expected if key not in found]
    lines += [f"{key}: unexpected, in the {found_as} but not in the {expected_as}" for key in found if key not in expected]
    lines += [
        f"{key}: shape {tuple(found[key].shape)} in the {found_as}, {tuple(expected[key].shape)} in the {expected_as}"
        for key in expected
        if key in found and found[key].shape != expected[key].shape
    ]
    return lines

"""Lightning writes checkpoints through :func:`tmaps.checkpoint.save_checkpoint`."""

from __future__ import annotations

from typing import Any

from lightning_fabric.utilities.types import _PATH
from pytorch_lightning.plugins.io import TorchCheckpointIO

from tmaps.checkpoint import save_checkpoint


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written beside their final name and renamed once complete; failures raise.

    Lightning's own ``_atomic_save`` (2.6) stages the file in the system's temporary folder
    and moves it: across file systems the move is a copy that a full disk leaves truncated
    under the final name, and a ``PermissionError`` from the move is swallowed, so a run whose
    ``checkpoints/`` cannot be written ends with exit code 0 and no checkpoint.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        save_checkpoint(checkpoint, path)

"""Progress bars for tmaps' long loops: shown on a terminal, quiet in logs and when turned off.

Synthesis, NAP and GradNAP passes, forced alignment, layouts and transcription draw a tqdm bar
on stderr when it is a terminal (never in a log file or under a batch scheduler). The commands
turn them off with ``trainer.enable_progress_bar=false`` through :func:`set_progress_bars`.
"""

from __future__ import annotations

from collections.abc import Iterable

from tqdm.auto import tqdm

_enabled: bool | None = None


def set_progress_bars(enabled: bool | None) -> None:
    """``None``: bars on a terminal only (the default); ``False``: never; ``True``: always."""
    global _enabled
    _enabled = enabled


def progress_bar(iterable: Iterable | None = None, description: str = "", total: int | None = None) -> tqdm:
    """A tqdm bar over ``iterable`` (or one to ``update`` by hand), shown as :func:`set_progress_bars` says."""
    return tqdm(iterable, desc=description, total=total, disable=None if _enabled is None else not _enabled, leave=False, dynamic_ncols=True)

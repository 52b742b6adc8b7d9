"""Progress bars for long loops: shown on a terminal, quiet in logs and when turned off."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

Item = TypeVar("Item")


def progress(iterable: Iterable[Item], description: str, total: int | None = None, enabled: bool | None = None) -> Iterable[Item]:
    """``iterable`` with a tqdm bar.

    Args:
        iterable: the loop.
        description: what the bar counts ("synthesizing", "NAP pass", ...).
        total: its length where ``len(iterable)`` does not tell.
        enabled: ``None`` shows the bar only when stderr is a terminal (never in a log file or
            under a batch scheduler); ``False`` never shows it (the commands pass
            ``trainer.enable_progress_bar`` here); ``True`` always does.
    """
    return tqdm(iterable, desc=description, total=total, disable=None if enabled is None else not enabled, leave=False, dynamic_ncols=True)

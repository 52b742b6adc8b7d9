"""The one error wrapper of every command: a tmaps error becomes one line on stderr and exit status 1.

Each command's entry point is ``@hydra.main(...)`` over ``@task_wrapper("tmaps-<command>")``
over ``def main(cfg)``. An error of bad input (a missing or damaged file, a value out of range,
a config of the wrong type, a folder that cannot be written, an extra that is not installed)
ends the command with ``tmaps-<command>: <message>`` on stderr and exit status 1; any other
error is a bug and keeps its traceback. ``TMAPS_TRACEBACK=1`` shows the traceback of every error
(Hydra rejects unknown flags, so this is an environment variable rather than a flag).

In a multirun (``-m``) the failed job's line is logged and the error goes on to the sweeper as a
:class:`CommandError`, so that a sweep records the job as failed, as it does any failure, instead
of ending at it.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException, InstantiationException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from tmaps.extras import MissingExtraError
from tmaps.training.resolvers import register_resolvers

# ValueError covers pydantic's ValidationError and tmaps' ConfigTypeError, CheckpointMismatchError, WeightMismatchError;
# OSError covers missing, unreadable and unwritable files and folders (CheckpointWriteError); the OmegaConf and
# instantiation errors are config values that cannot be read or passed on.
BAD_INPUT = (ValueError, OSError, MissingExtraError, OmegaConfBaseException, InstantiationException)
TRACEBACK_VARIABLE = "TMAPS_TRACEBACK"

log = logging.getLogger(__name__)

Result = TypeVar("Result")


class CommandError(CompactHydraException):
    """Bad input to one job of a multirun; Hydra reports it without a traceback."""


def one_line(message: str) -> str:
    """``message`` on one line: the lines after the first (a listing, OmegaConf's ``full_key: ...``) joined by ``; ``."""
    first, *rest = [line.strip() for line in message.splitlines() if line.strip()] or [""]
    separator = " " if first.endswith(":") else "; "
    return first + (separator + "; ".join(rest) if rest else "")


def task_wrapper(command_name: str) -> Callable[[Callable[[DictConfig], Result]], Callable[[DictConfig], Result]]:
    """Decorate a command's ``main(cfg)`` (inside ``@hydra.main``) so that bad input ends it with one line naming the fault.

    Defining an entry point also registers the configs' resolvers, which Hydra needs before it
    calls ``main`` (the run folder is ``${new_folder:...}``).
    """
    register_resolvers()

    def decorate(main: Callable[[DictConfig], Result]) -> Callable[[DictConfig], Result]:
        @functools.wraps(main)
        def wrapped(cfg: DictConfig) -> Result:
            try:
                return main(cfg)
            except BAD_INPUT as error:
                if os.environ.get(TRACEBACK_VARIABLE) == "1":
                    raise
                message = f"{command_name}: {one_line(str(error))}"
                if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
                    log.error(message)
                    raise CommandError(message) from None
                sys.exit(message)

        return wrapped

    return decorate

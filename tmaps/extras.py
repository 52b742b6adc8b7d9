"""Optional dependencies: import them where a feature needs them, or say which extra installs them."""

from __future__ import annotations

from importlib import import_module
from types import ModuleType


class MissingExtraError(ImportError):
    """A feature needs a package of an optional extra that is not installed."""


def require(module: str, extra: str, feature: str) -> ModuleType:
    """Import ``module``; if it is missing, raise ``MissingExtraError`` naming ``extra``.

    Example: ``umap = require("umap", extra="umap", feature="the UMAP layout")``.
    """
    try:
        return import_module(module)
    except ImportError as error:
        raise MissingExtraError(
            f"{feature} needs the package {error.name or module!r}, which is not installed: "
            f"pip install 'tmaps[{extra}]'"
        ) from error

"""What each command does, one module per command (``tmaps-train`` is :mod:`tmaps.commands.train`, ...).

``tmaps.cli`` holds the thin Hydra entry points that call these functions.
"""

from tmaps.training.resolvers import register_resolvers

register_resolvers()

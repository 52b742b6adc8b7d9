"""Thin Hydra entry points (``tmaps-train``, ...); the resolvers their configs use live in
:mod:`tmaps.commands.resolvers`."""

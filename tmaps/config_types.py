"""Config values checked against the annotations of what they are passed to: the one way tmaps checks a config.

A config node (a plain mapping) goes to a class or function (a dataclass such as
:class:`~tmaps.topo.TopoConfig`, a constructor) or is described by a ``TypedDict``;
:func:`check_values` checks each key against that target's annotations with pydantic (in its
lax mode, so ``1`` passes for a float) and :func:`check_config` raises the problems as one
line, each naming the key and its value. A mapping given where a dataclass or ``TypedDict`` is
annotated is checked key by key against it in turn. Rules between values (ranges, keys that
exclude each other) stay with the class that owns them (its ``__post_init__``).
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Callable, Mapping

from pydantic import ConfigDict, PydanticSchemaGenerationError, TypeAdapter, ValidationError


class ConfigTypeError(ValueError):
    """Config values of the wrong type, or keys that nothing takes."""


def check_config(values: Mapping, target: Callable, prefix: str) -> dict:
    """``values`` as a dict once every key and type fits ``target``; else ``ConfigTypeError`` naming each ``<prefix>.<key>=<value>``."""
    problems = check_values(values, target, prefix)
    if problems:
        raise ConfigTypeError("; ".join(problems))
    return dict(values)


def check_values(values: Mapping, target: Callable, prefix: str, skip: typing.Container[str] = ()) -> list[str]:
    """``"<prefix>.<key>=<value>: expected <type>"`` for each value that ``target`` would not accept.

    ``target`` is a class or function (its signature's annotations) or a ``TypedDict``. Keys
    in ``skip``, keys starting with ``_`` (``_target_``) and nested ``_target_`` nodes
    (instantiated first) are not checked; a key ``target`` does not take is a problem unless
    it takes ``**kwargs``.
    """
    hints, open_ended = _annotations(target)
    problems = []
    for key, value in values.items():
        if key.startswith("_") or key in skip:
            continue
        if key not in hints:
            if not open_ended:
                problems.append(f"{prefix}.{key}: {_name(target)} has no such argument; it takes {sorted(hints)}")
            continue
        if hints[key] is None or (isinstance(value, Mapping) and "_target_" in value):
            continue
        structure = _structure(hints[key])
        if isinstance(value, Mapping) and structure is not None:
            problems += check_values(value, structure, f"{prefix}.{key}")
            continue
        try:
            adapter = TypeAdapter(hints[key], config=ConfigDict(arbitrary_types_allowed=True))
        except PydanticSchemaGenerationError:
            continue
        try:
            adapter.validate_python(value)
        except ValidationError as error:
            problems.append(f"{prefix}.{key}={value!r}: {_mismatch(hints[key], value, error)}")
    return problems


def _structure(hint: object) -> type | None:
    """The dataclass or ``TypedDict`` that ``hint`` (or a member of its union) names, if any."""
    members = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    return next((member for member in members if dataclasses.is_dataclass(member) or typing.is_typeddict(member)), None)


def _mismatch(hint: object, value: object, error: ValidationError) -> str:
    """What is wrong with ``value``: its type (``expected float, got str``) or, when the type fits, a bound (pydantic's words)."""
    if typing.get_origin(hint) is typing.Annotated and _fits(typing.get_args(hint)[0], value):
        return error.errors()[0]["msg"]
    return f"expected {describe_type(hint)}, got {type(value).__name__}"


def _fits(hint: object, value: object) -> bool:
    try:
        TypeAdapter(hint).validate_python(value)
    except ValidationError:
        return False
    return True


def _annotations(target: Callable) -> tuple[dict[str, object | None], bool]:
    """Argument name -> annotation (``None`` when it has none or it cannot be resolved), and whether ``**kwargs`` is taken."""
    if typing.is_typeddict(target):
        return typing.get_type_hints(target, include_extras=True), False
    function = target.__init__ if inspect.isclass(target) else target
    try:
        resolved = typing.get_type_hints(function)
    except (NameError, TypeError):
        resolved = {}
    parameters = inspect.signature(function).parameters
    hints = {
        name: resolved.get(name)
        for name, parameter in parameters.items()
        if name != "self" and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
    }
    return hints, any(parameter.kind == parameter.VAR_KEYWORD for parameter in parameters.values())


def describe_type(hint: object) -> str:
    """``int or None``, ``'cosine' or 'constant'``, ``list[int]``: an annotation as a user reads it."""
    origin, arguments = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        return describe_type(arguments[0])
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe_type(argument) for argument in arguments)
    if origin is typing.Literal:
        return " or ".join(repr(argument) for argument in arguments)
    if hint is type(None):
        return "None"
    if origin is not None:
        return f"{_name(origin)}[{', '.join(describe_type(argument) for argument in arguments)}]"
    return _name(hint)


def _name(thing: object) -> str:
    return getattr(thing, "__qualname__", None) or str(thing).replace("typing.", "")

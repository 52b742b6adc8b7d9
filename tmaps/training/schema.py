"""Type checks of a composed ``tmaps-train`` config, before anything runs.

Each config node is checked against the annotations of what it is passed to: ``trainer`` and
every ``_target_`` of ``checkpoints``, ``callbacks`` and ``logger`` against their constructors,
``data`` against :class:`~tmaps.data.SpeechDataModule`, ``model`` against
the architecture that ``model.arch`` names (:data:`~tmaps.models.ARCHITECTURES`), ``optim`` against :class:`~tmaps.training.module.OptimConfig`
and ``transfer`` against :class:`~tmaps.transfer.TransferConfig`. Pydantic does the checking
(in its lax mode, so ``1`` passes for a float). Without this, ``trainer.max_epochs=abc`` is
ignored under ``fast_dev_run`` and otherwise fails deep inside Lightning without naming the key.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Mapping

import hydra
from omegaconf import DictConfig, OmegaConf
from pydantic import ConfigDict, PydanticSchemaGenerationError, TypeAdapter, ValidationError

from tmaps.data import SpeechDataModule
from tmaps.models import ARCHITECTURES, model_config
from tmaps.training.module import OptimConfig
from tmaps.transfer import TransferConfig

# Set by the code from the data, not by the config.
MODEL_ARGUMENTS_FROM_DATA = ("n_features", "n_classes")


class ConfigTypeError(ValueError):
    """Config values of the wrong type, or keys that nothing takes."""


def check_config_types(cfg: DictConfig) -> None:
    """Raise ``ConfigTypeError`` listing every ``key=value`` whose type does not fit where it goes."""
    config = OmegaConf.to_container(cfg, resolve=True)
    problems = check_values(config["trainer"], hydra.utils.get_class(config["trainer"]["_target_"]), "trainer")
    for group in ("checkpoints", "callbacks", "logger"):
        for name, node in (config.get(group) or {}).items():
            if isinstance(node, Mapping) and "_target_" in node:
                problems += check_values(node, hydra.utils.get_object(node["_target_"]), f"{group}.{name}")
    problems += check_values(config["data"], SpeechDataModule, "data")
    problems += check_model(config["model"])
    problems += check_values(config["optim"], OptimConfig, "optim")
    if config.get("transfer"):
        problems += check_values(config["transfer"], TransferConfig, "transfer")
    if problems:
        raise ConfigTypeError("config values of the wrong type or unknown keys:\n  " + "\n  ".join(problems))


def check_model(model: Mapping) -> list[str]:
    """The ``model`` config checked against the constructor of the architecture that ``model.arch`` names."""
    arguments = model_config(model)
    arch = arguments.pop("arch")
    if arch not in ARCHITECTURES:
        return [f"model.arch={arch!r}: expected one of {sorted(ARCHITECTURES)}"]
    return check_values(arguments, ARCHITECTURES[arch], "model")


def check_values(values: Mapping, target: Callable, prefix: str) -> list[str]:
    """``"<prefix>.<key>=<value>: expected <type>"`` for each value that ``target`` would not accept.

    ``target`` is a class or function (its signature's annotations) or a ``TypedDict``. Keys
    starting with ``_`` (``_target_``) and nested ``_target_`` nodes (instantiated first) are
    not checked; a key ``target`` does not take is a problem unless it takes ``**kwargs``.
    """
    hints, open_ended = _annotations(target)
    problems = []
    for key, value in values.items():
        if key.startswith("_") or (prefix == "model" and key in MODEL_ARGUMENTS_FROM_DATA):
            continue
        if key not in hints:
            if not open_ended:
                problems.append(f"{prefix}.{key}: {_name(target)} has no such argument; it takes {sorted(hints)}")
            continue
        if hints[key] is None or (isinstance(value, Mapping) and "_target_" in value):
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

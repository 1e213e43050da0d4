"""Frozen config dataclasses <-> argparse options <-> JSON, driven by the dataclass fields alone.

A field's default, type and `option(...)` metadata (help, choices) are the only place an option is
described: the CLI is generated from them and `config.json` is read back through the same type
hints, so a default or a choice is never written twice.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from common.errors import ConfigError
from common.runs.presets import DATA_FIELDS

T = TypeVar("T")


def option(help: str, *, choices: tuple | None = None, metavar=None, flag: str | None = None) -> dict:
    """Field metadata for the generated CLI: `field(default=..., metadata=option("why", choices=...))`;
    `flag` replaces the option name derived from the field's (when the field's name is taken)."""
    return {"help": help, "choices": choices, "metavar": metavar, "flag": flag}


def check_choice(owner: str, name: str, value, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{owner}.{name} '{value}': must be one of {list(choices)}")


def validate_choices(config) -> None:
    """Refuse any field value outside its `option(choices=...)` (called from __post_init__)."""
    for f in dataclasses.fields(config):
        choices = f.metadata.get("choices")
        if choices is not None:
            check_choice(type(config).__name__, f.name, getattr(config, f.name), choices)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _unwrap_optional(hint) -> tuple[Any, bool]:
    """(inner type, whether None is allowed) of `X | None`."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return hint, False


def add_arguments(parser: argparse.ArgumentParser, defaults, *, title: str, skip: tuple[str, ...] = (),
                  choices: dict[str, tuple] | None = None) -> None:
    """One option per field of the dataclass instance `defaults` (its values are the defaults shown)."""
    group = parser.add_argument_group(title)
    hints = typing.get_type_hints(type(defaults))
    for f in dataclasses.fields(defaults):
        if f.name in skip:
            continue
        hint, optional = _unwrap_optional(hints[f.name])
        default = getattr(defaults, f.name)
        meta = f.metadata
        kwargs: dict[str, Any] = {"default": default, "dest": f.name}
        field_choices = (choices or {}).get(f.name, meta.get("choices"))
        shown = "" if default is None else f" (default: {_show(default)})"
        help_text = (meta.get("help") or "") + shown
        if hint is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(hint) is tuple:
            args = typing.get_args(hint)
            kwargs["type"] = args[0]
            kwargs["nargs"] = "*" if (len(args) == 2 and args[1] is Ellipsis) else len(args)
            if optional and kwargs["nargs"] == "*":
                kwargs["nargs"] = "+"
            if meta.get("metavar"):
                kwargs["metavar"] = meta["metavar"]
        else:
            kwargs["type"] = hint
            if field_choices:
                kwargs["choices"] = field_choices
            if meta.get("metavar"):
                kwargs["metavar"] = meta["metavar"]
        group.add_argument(meta.get("flag") or flag(f.name), help=help_text.replace("%", "%%"), **kwargs)


def _show(value) -> str:
    if isinstance(value, tuple):
        return " ".join(str(v) for v in value) or "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def from_namespace(cls: type[T], namespace: argparse.Namespace, **extra) -> T:
    """The dataclass `cls` from the parsed options of its fields (lists become tuples)."""
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in extra:
            values[f.name] = extra[f.name]
        elif hasattr(namespace, f.name):
            value = getattr(namespace, f.name)
            values[f.name] = tuple(value) if isinstance(value, list) else value
    return cls(**values)


def to_jsonable(value):
    """Dataclasses, tuples, Paths and numpy scalars as plain JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalar
        return value.item()
    return value


def from_jsonable(cls: type[T], values: dict, *, origin: str) -> T:
    """Rebuild dataclass `cls` from `to_jsonable` output; a missing or unknown field names `origin`."""
    if not isinstance(values, dict):
        raise ConfigError(f"{origin}: expected an object for {cls.__name__}, found {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"{origin}: unknown field(s) {unknown} for {cls.__name__}")
    out = {}
    for f in dataclasses.fields(cls):
        if f.name not in values:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{origin}: missing field '{f.name}' of {cls.__name__}")
            continue
        out[f.name] = _decode(hints[f.name], values[f.name], origin=f"{origin}: {f.name}")
    try:
        return cls(**out)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{origin}: invalid {cls.__name__} ({exc})") from exc


def parse_overrides(cls: type, pairs, *, flag_name: str = "--model") -> dict:
    """["key=value", ...] -> {field: typed value} for dataclass `cls` (e.g. a model config's fields on
    top of a preset). A value is JSON (0.1, true, [3, 3, 3, 1]) or, failing that, a bare string."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    out = {}
    for pair in pairs or ():
        key, sep, text = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"{flag_name} '{pair}': expected KEY=VALUE")
        if key in DATA_FIELDS and key in names:
            raise ConfigError(f"{flag_name} '{pair}': {key} comes from the data (--shape, the dataset's classes), "
                              "not from the model")
        if key not in names:
            raise ConfigError(f"{flag_name} '{pair}': '{key}' is not a field of {cls.__name__} ({', '.join(names)})")
        out[key] = _decode(hints[key], _json_or_text(text), origin=f"{flag_name} {key}")
    return out


def _json_or_text(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def _decode(hint, value, *, origin: str):
    inner, optional = _unwrap_optional(hint)
    if value is None:
        if optional or inner is Any:
            return None
        raise ConfigError(f"{origin}: null is not allowed")
    if dataclasses.is_dataclass(inner):
        return from_jsonable(inner, value, origin=origin)
    if typing.get_origin(inner) is tuple:
        args = typing.get_args(inner)
        item = args[0]
        if isinstance(value, str):  # "2,2" or "" (the empty tuple), as typed on a command line
            value = [_json_or_text(part.strip()) for part in value.split(",") if part.strip()]
        elif not isinstance(value, list):
            value = [value]  # one number: a one-element tuple
        return tuple(_decode(item, v, origin=origin) for v in value)
    if inner is Path:
        return Path(value)
    if inner is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if inner in (int, float, bool, str) and (not isinstance(value, inner) or (inner is int and isinstance(value, bool))):
        raise ConfigError(f"{origin}: {value!r} is not a {inner.__name__}")
    return value


"""Frozen config dataclasses: typed `key=value` parsing, nested overrides, JSON round trip."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any

from metalearn.core.errors import UserError

_NONE_WORDS = ("none", "null")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def parse_value(text: str, tp: Any, name: str) -> Any:
    """Turn `text` into a value of type `tp` (int, float, str, bool, X | None, tuple[X, ...])."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if text.strip().lower() in _NONE_WORDS and len(args) < len(typing.get_args(tp)):
            return None
        for arg in args:
            try:
                return parse_value(text, arg, name)
            except UserError:
                pass
        raise UserError(
            f"{name} must be {' or '.join(map(_type_name, args))} or none, got {text!r}"
        )
    if origin is tuple:
        (item, *_rest) = typing.get_args(tp)
        parts = [p for p in text.split(";") if p.strip()]
        return tuple(parse_value(p.strip(), item, name) for p in parts)
    if typing.get_origin(tp) is typing.Literal:
        allowed = typing.get_args(tp)
        if text not in allowed:
            raise UserError(f"{name} must be one of {', '.join(map(str, allowed))}, got {text!r}")
        return text
    if tp is bool:
        low = text.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise UserError(f"{name} must be true or false, got {text!r}")
    if tp is int:
        return _parse_int(text, name)
    if tp is float:
        try:
            return float(text)
        except ValueError:
            raise UserError(f"{name} must be a number, got {text!r}") from None
    if tp is str:
        return text
    raise TypeError(f"cannot parse option {name} of type {tp}")


def _parse_int(text: str, name: str) -> int:
    """An integer, also spelled 1e4 or 2**24."""
    t = text.strip()
    try:
        if "**" in t:
            base, _, exp = t.partition("**")
            return int(base) ** int(exp)
        if t.lstrip("+-").isdigit():
            return int(t)
        value = float(t)
    except ValueError:
        raise UserError(f"{name} must be an integer, got {text!r}") from None
    if not value.is_integer():
        raise UserError(f"{name} must be an integer, got {text!r}")
    return int(value)


def field_types(cls: type) -> dict[str, Any]:
    """Resolved type hints of a dataclass's init fields."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def override(cfg: Any, assignments: list[str]) -> Any:
    """Apply `key=value` (dotted keys into nested dataclasses) to a frozen config.

    All assignments are applied before the config is rebuilt, so its validation sees the final
    combination, whatever the order of the assignments.
    """
    values = dataclasses.asdict(cfg)
    for item in assignments:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set expects key=value, got {item!r}")
        _set(type(cfg), values, key.strip().split("."), text, key.strip())
    return from_dict(type(cfg), values)


def _set(cls: type, values: dict[str, Any], path: list[str], text: str, full: str) -> None:
    types_ = field_types(cls)
    head = path[0]
    if head not in types_:
        raise UserError(f"unknown config key {full!r}; allowed here: {', '.join(sorted(types_))}")
    tp = types_[head]
    if len(path) > 1:
        if not dataclasses.is_dataclass(tp):
            raise UserError(f"config key {full!r}: {head!r} has no sub-keys")
        _set(tp, values[head], path[1:], text, full)
    elif dataclasses.is_dataclass(tp):
        allowed = ", ".join(f"{full}.{k}" for k in sorted(field_types(tp)))
        raise UserError(f"config key {full!r} is a group; set one of: {allowed}")
    else:
        values[head] = parse_value(text, tp, full)


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (nested) config dataclass (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a (nested) config dataclass from `to_dict` output, rejecting unknown keys."""
    types_ = field_types(cls)
    unknown = set(data) - set(types_)
    if unknown:
        raise UserError(f"unknown keys {sorted(unknown)} for {cls.__name__}")
    kwargs = {}
    for name, value in data.items():
        tp = types_[name]
        if dataclasses.is_dataclass(tp) and isinstance(value, dict):
            value = from_dict(tp, value)
        elif typing.get_origin(tp) is tuple and isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def describe(cfg: Any) -> str:
    """Every leaf key of a (nested) config with its type and value, one per line, the value
    written as `--set key=value` takes it."""
    rows = list(_leaves(cfg, ""))
    width = max(len(k) for k, _, _ in rows)
    kinds = max(len(t) for _, t, _ in rows)
    return "\n".join(f"{k:<{width}}  {t:<{kinds}}  {v}" for k, t, v in rows)


def _leaves(cfg: Any, prefix: str):
    for name, tp in field_types(type(cfg)).items():
        value = getattr(cfg, name)
        if dataclasses.is_dataclass(tp):
            yield from _leaves(value, f"{prefix}{name}.")
        else:
            yield prefix + name, _type_text(tp), format_value(value)


def _type_text(tp: Any) -> str:
    return (
        getattr(tp, "__name__", None) if not typing.get_args(tp) else str(tp).replace("typing.", "")
    )


def format_value(value: Any) -> str:
    """`value` as `parse_value` reads it back."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return ";".join(map(format_value, value))
    return str(value) if value != "" else "(empty)"

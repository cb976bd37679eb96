"""SPEC strings: `name[:key=value,...]` <-> task families."""

from __future__ import annotations

import dataclasses

from metalearn.core.config import field_types, parse_value
from metalearn.core.errors import UserError
from metalearn.data.base import TaskFamily


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """Split `name:key=value,...` into the name and its raw option strings."""
    name, _, rest = spec.strip().partition(":")
    options: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"family option must be key=value, got {item!r} in {spec!r}")
        options[key.strip()] = value.strip()
    return name.strip(), options


def build(registry: dict[str, type[TaskFamily]], spec: str) -> TaskFamily:
    """The family a SPEC names, its options parsed to their declared types."""
    name, raw = parse_spec(spec)
    if name not in registry:
        raise UserError(f"unknown family {name!r}; available: {', '.join(sorted(registry))}")
    cls = registry[name]
    types_ = field_types(cls)
    kwargs = {}
    for key, text in raw.items():
        if key not in types_:
            raise UserError(
                f"unknown option {key!r} for family {name}; allowed: {', '.join(types_)}"
            )
        kwargs[key] = parse_value(text, types_[key], f"{name} option {key}")
    return cls(**kwargs)


def format_spec(family: TaskFamily) -> str:
    """The canonical SPEC of a family: every option spelled out, so it rebuilds exactly."""
    parts = []
    shared = {f.name for f in dataclasses.fields(TaskFamily)}
    fields = [f for f in dataclasses.fields(family) if f.init]
    # the family's own options first, then the pool options every family shares
    for f in sorted(fields, key=lambda f: f.name in shared):
        value = getattr(family, f.name)
        parts.append(f"{f.name}={'none' if value is None else value}")
    return f"{family.name}:{','.join(parts)}"


def describe(cls: type[TaskFamily]) -> str:
    """One line per option with its default, for `metalearn families`."""
    shared = {f.name for f in dataclasses.fields(TaskFamily)}
    fields = sorted((f for f in dataclasses.fields(cls) if f.init), key=lambda f: f.name in shared)
    types_ = field_types(cls)
    opts = ", ".join(
        f"{f.name}={'none' if f.default is None else f.default} "
        f"({getattr(types_[f.name], '__name__', str(types_[f.name]))})"
        for f in fields
    )
    return opts

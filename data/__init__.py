"""Generated task distributions: families of supervised tasks with a finite-pool knob."""

from __future__ import annotations

from typing import Any

from metalearn.core.errors import UserError
from metalearn.data.base import SUBSETS, Batch, TaskFamily
from metalearn.data.bursty import Bursty
from metalearn.data.functions import DecisionTree, ReluNet, SparseLinear
from metalearn.data.images import Images
from metalearn.data.linear import LinearRegression
from metalearn.data.projected import Projected
from metalearn.data.random_labels import RandomLabels
from metalearn.data.spec import build, describe, format_spec, parse_spec

FAMILIES: dict[str, type[TaskFamily]] = {
    cls.name: cls
    for cls in (
        Bursty,
        Images,
        LinearRegression,
        Projected,
        RandomLabels,
        SparseLinear,
        ReluNet,
        DecisionTree,
    )
}


def make(name: str, **options: Any) -> TaskFamily:
    """The family `name` with its options, e.g. `make('linear_regression', dim=8)`."""
    if name not in FAMILIES:
        raise UserError(f"unknown family {name!r}; available: {', '.join(sorted(FAMILIES))}")
    cls = FAMILIES[name]
    try:
        return cls(**options)
    except TypeError as e:
        raise UserError(f"bad options for family {name}: {e}") from None


def from_spec(spec: str) -> TaskFamily:
    """The family a SPEC string names: `name[:key=value,...]`."""
    return build(FAMILIES, spec)


__all__ = [
    "FAMILIES",
    "SUBSETS",
    "Batch",
    "TaskFamily",
    "Bursty",
    "DecisionTree",
    "Images",
    "LinearRegression",
    "Projected",
    "RandomLabels",
    "ReluNet",
    "SparseLinear",
    "make",
    "from_spec",
    "parse_spec",
    "format_spec",
    "describe",
]

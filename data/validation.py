"""Checks on a base dataset as loaded, before any family or learner sees it.

One bad value spreads: a NaN in one input becomes NaN in every input after normalization, and
a nearest-neighbour rule then ranks the query itself first. So a base is refused at load time,
with one line naming where it came from, the field and the problem.
"""

from __future__ import annotations

import numpy as np

from metalearn.core.errors import UserError


def checked_arrays(source: str, x, y) -> tuple[np.ndarray, np.ndarray]:
    """Inputs `x [n, D]` float32 (flattened) and labels `y [n]` int32 from raw arrays, or a
    UserError naming `source`, the field and what is wrong."""
    where = f"base {source!r}"
    x, y = np.asarray(x), np.asarray(y)
    if not any(np.issubdtype(x.dtype, t) for t in (np.integer, np.floating, np.bool_)):
        raise UserError(f"{where}: field x has dtype {x.dtype}; inputs must be numbers")
    if x.ndim < 2:
        raise UserError(
            f"{where}: field x has shape {x.shape}; inputs must be at least 2-D [examples, "
            "features...] (for one feature per example, save x as shape (n, 1))"
        )
    if len(x) == 0 or x[0].size == 0:
        raise UserError(f"{where}: field x has shape {x.shape}; need examples and features")
    with np.errstate(over="ignore"):  # values beyond float32 become inf, reported below
        x = x.astype(np.float32).reshape(len(x), -1)
    finite = np.isfinite(x)
    if not finite.all():
        bad = np.argwhere(~finite)
        raise UserError(
            f"{where}: field x has {len(bad)} non-finite value(s) (nan or inf, or beyond "
            f"float32), the first in example {bad[0][0]}; inputs must be finite"
        )
    y = _labels(where, y)
    if len(y) != len(x):
        raise UserError(
            f"{where}: field x has {len(x)} examples but field y {len(y)} labels; "
            "need one label per example"
        )
    return x, y


def _labels(where: str, y: np.ndarray) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise UserError(f"{where}: field y has shape {y.shape}; labels must be 1-D [examples]")
    if y.size == 0:
        raise UserError(f"{where}: field y is empty; need one label per example")
    if np.issubdtype(y.dtype, np.floating):
        # labels saved as floats (0.0, 1.0, ...) are fine; 0.5 is not a class
        whole = np.isfinite(y) & (y == np.round(y))
        if not whole.all():
            i = int(np.argmin(whole))
            raise UserError(
                f"{where}: field y holds {y[i]!r} at example {i}; labels must be integers 0..C-1"
            )
    elif not (np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_):
        raise UserError(f"{where}: field y has dtype {y.dtype}; labels must be integers 0..C-1")
    if y.min() < 0 or y.max() >= 2**31:
        i = int(np.argmin(y)) if y.min() < 0 else int(np.argmax(y))
        raise UserError(
            f"{where}: field y holds {int(y[i])} at example {i}; labels must be integers 0..C-1"
        )
    return y.astype(np.int32)

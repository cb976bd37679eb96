"""One way to tune a hand-designed learner's learning rate, on one grid, for every learner
that has one (logistic-regression baselines, Adam, SGD, ...)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

# half decades from 1e-4 to 1e1: wide enough for Adam on an MLP (1e-3 .. 1e-1) and for plain
# SGD on a linear classifier (up to 1e1)
LEARNING_RATES: tuple[float, ...] = tuple(float(10.0**e) for e in np.arange(-4.0, 1.01, 0.5))


def best_of(grid: Sequence[float], score: Callable[[float], float]) -> float:
    """The grid value of highest `score` (the first, on ties); a non-finite score (a diverged
    run) counts as the worst."""
    if not grid:
        raise ValueError("the grid to tune over is empty")
    scores = [score(v) for v in grid]
    scores = [s if math.isfinite(s) else -math.inf for s in scores]
    return grid[int(np.argmax(scores))]


def grid_label(grid: Sequence[float]) -> str:
    """'1e-04..1e+01', for tables that say where a learning rate was tuned."""
    return f"{min(grid):.0e}..{max(grid):.0e}"

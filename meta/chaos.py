"""Chaos diagnostics: how noisy meta-gradients get as unrolls grow (Metz et al. 2021,
"Gradients are Not All You Need").

For a truncated-unroll system at given meta-parameters, and each episode length T: the spread
over random episodes of the exact gradient of the mean episode loss (backprop through all T
steps), and the spread of each estimator's per-worker estimate (one window of each worker at a
random point of its episode; FullES: one whole episode). Chaotic dynamics show up as an exact
gradient whose variance grows exponentially with T, while ES-based estimators stay bounded.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from metalearn.core.errors import UserError
from metalearn.core.files import atomic_write, atomic_write_text
from metalearn.meta.estimators import ESTIMATORS
from metalearn.meta.objective import Theta
from metalearn.meta.truncated import TruncatedTask, episode_loss

EXACT = "exact"


class ChaosPoint(NamedTuple):
    length: int
    estimator: str  # "exact" or an ESTIMATORS name
    variance: float  # total variance (trace of the covariance) of one sample's estimate
    mean_sq: float  # squared norm of the mean estimate (the signal)
    samples: int


class _Moments:
    """Running sums (float64, on the host) of samples of a flattened pytree, so the spread of
    many samples is found a chunk at a time."""

    def __init__(self) -> None:
        self.n, self.total, self.squares = 0, 0.0, 0.0

    def add(self, grads: Theta) -> None:
        leaves = [
            np.asarray(g, np.float64).reshape(g.shape[0], -1)
            for g in jax.tree_util.tree_leaves(grads)
        ]
        flat = np.concatenate(leaves, axis=1)
        self.n += len(flat)
        self.total = self.total + flat.sum(0)
        self.squares = self.squares + (flat**2).sum(0)

    def spread(self) -> tuple[float, float]:
        """(total variance, ddof 1; squared norm of the mean)."""
        mean = self.total / self.n
        var = (self.squares - self.n * mean**2) / (self.n - 1)
        return float(np.maximum(var, 0.0).sum()), float((mean**2).sum())


def with_horizon(task: TruncatedTask, length: int) -> TruncatedTask:
    if not dataclasses.is_dataclass(task) or "horizon" not in {
        f.name for f in dataclasses.fields(task)
    }:
        raise UserError(
            f"chaos diagnostics need a dataclass task with a `horizon` field, got "
            f"{type(task).__name__}"
        )
    return dataclasses.replace(task, horizon=length)


def diagnose(
    task: TruncatedTask,
    theta: Theta,
    lengths: Sequence[int],
    samples: int,
    key: jax.Array,
    truncation: int = 10,
    sigma: float = 0.01,
    estimators: Sequence[str] = tuple(ESTIMATORS),
    chunk: int = 32,
    progress: Callable[[str], None] | None = None,
) -> list[ChaosPoint]:
    """Variance of the exact meta-gradient and of each estimator versus episode length.

    Samples are drawn `chunk` at a time, so memory stays that of `chunk` episodes (backprop
    through a whole episode keeps every step's state) whatever `samples` is; `progress` gets
    a line after each (length, estimator).
    """
    if samples < 2 or any(t < 1 for t in lengths):
        raise UserError(
            f"samples must be >= 2 and lengths positive, got {samples} and {list(lengths)}"
        )
    if chunk < 2:
        raise UserError(f"chunk must be >= 2, got {chunk}")
    unknown = [e for e in estimators if e not in ESTIMATORS]
    if unknown:
        raise UserError(f"unknown estimators {unknown}; choose from {', '.join(ESTIMATORS)}")
    sizes = [min(chunk, samples - i) for i in range(0, samples, chunk)]
    points = []
    start = time.perf_counter()

    def record(length: int, name: str, moments: _Moments) -> None:
        points.append(ChaosPoint(length, name, *moments.spread(), samples))
        if progress is not None:
            progress(
                f"length {length:>5d}  {name:<13s} variance {points[-1].variance:.4g}  "
                f"({time.perf_counter() - start:.0f} s so far)"
            )

    for length in lengths:
        t = with_horizon(task, length)
        k_exact, k_init, k_est = jax.random.split(jax.random.fold_in(key, length), 3)
        grad = jax.jit(jax.vmap(jax.grad(functools.partial(episode_loss, t)), (None, 0)))
        moments = _Moments()
        for c, size in enumerate(sizes):
            moments.add(grad(theta, jax.random.split(jax.random.fold_in(k_exact, c), size)))
        record(length, EXACT, moments)
        window = min(truncation, length)
        for name in estimators:
            if name == "nres" and length % window:
                continue  # NRES needs whole windows per episode
            moments = _Moments()
            for size in sorted(set(sizes), reverse=True):  # one compile per chunk size
                est = ESTIMATORS[name](t, num_workers=size, truncation=window, sigma=sigma)
                init, per_worker = jax.jit(est.init), jax.jit(est.per_worker)
                for c in (c for c, s in enumerate(sizes) if s == size):
                    state = init(jax.random.fold_in(k_init, c), theta)
                    moments.add(per_worker(theta, state, jax.random.fold_in(k_est, c))[0])
            record(length, name, moments)
    return points


def write(points: list[ChaosPoint], out: Path, title: str = "") -> str:
    """chaos.json, chaos.png (variance versus length, log scale) and a text table under `out`;
    returns the table."""
    out = Path(out)
    records = [p._asdict() for p in points]
    for r in records:
        for k in ("variance", "mean_sq"):
            r[k] = r[k] if math.isfinite(r[k]) else None
    atomic_write_text(out / "chaos.json", json.dumps(records, indent=1) + "\n")
    names = list(dict.fromkeys(p.estimator for p in points))
    lengths = sorted({p.length for p in points})
    by = {(p.estimator, p.length): p for p in points}
    lines = [
        f"variance of one sample's meta-gradient estimate (trace of the covariance over "
        f"{points[0].samples} samples) versus episode length",
        "length".ljust(8) + "".join(f"{n:>14s}" for n in names),
    ]
    for t in lengths:
        cells = [f"{by[(n, t)].variance:14.4g}" if (n, t) in by else " " * 14 for n in names]
        lines.append(f"{t:<8d}" + "".join(cells))
    text = "\n".join(lines)
    atomic_write_text(out / "chaos.txt", text + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for n in names:
        xs = [t for t in lengths if (n, t) in by]
        ax.plot(xs, [by[(n, t)].variance for t in xs], marker="o", ms=3, label=n)
    ax.set_xscale("log")
    ax.set_xticks(lengths, [str(t) for t in lengths])
    ax.minorticks_off()
    ax.set_yscale("log")
    ax.set_xlabel("episode length (inner steps)")
    ax.set_ylabel("variance of the meta-gradient estimate")
    ax.set_title(title or "chaos diagnostics", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(out / "chaos.png", lambda f: fig.savefig(f, format="png", dpi=110), mode="wb")
    plt.close(fig)
    return text


__all__ = ["ChaosPoint", "diagnose", "write"]

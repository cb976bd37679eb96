"""Gradient estimators for truncated unrolls of a `TruncatedTask`.

- `TruncatedBackprop`: backprop through each window, the incoming state held fixed (biased:
  it ignores how theta shaped the state; Metz et al. 2021 show why full backprop is no cure).
- `TruncatedES`: antithetic ES on each window from the unperturbed state (biased likewise).
- `PES`: Persistent ES (Vicol, Metz & Sohl-Dickstein 2021): particles keep their perturbed
  trajectories and the noise accumulated since the episode began; unbiased.
- `NRES`: Noise-Reuse ES (Li et al. 2023): one noise per episode, reused by every window;
  unbiased, with lower variance than PES.
- `FullES`: antithetic ES over whole episodes.

Each keeps `num_workers` workers (antithetic pairs count once), each at its own point of its
episode (`stagger`), and returns the mean of the per-worker estimates. Per-worker code is
vmapped at the call site; `per_worker` exposes the individual estimates.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from meta.errors import UserError
from meta.objective import Estimate, Theta
from meta.truncated import TruncatedTask, Worker, episode_key, new_worker, unroll

_NOISE = 0x6E6F6973  # folded into an episode key for NRES noise


def _tree_normal(key: jax.Array, like: Theta, scale: float) -> Theta:
    leaves, tree = jax.tree_util.tree_flatten(like)
    keys = jax.random.split(key, len(leaves))
    return tree.unflatten(
        [scale * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves, strict=True)]
    )


def _axpy(a: jax.Array, x: Theta, y: Theta) -> Theta:
    return jax.tree_util.tree_map(lambda u, v: a * u + v, x, y)


def _scale(a: jax.Array, x: Theta) -> Theta:
    return jax.tree_util.tree_map(lambda u: a * u, x)


def _mean0(tree: Any) -> Any:
    return jax.tree_util.tree_map(lambda x: x.mean(0), tree)


@dataclasses.dataclass(frozen=True)
class TruncatedEstimator(abc.ABC):
    """Shared machinery: workers, staggering, averaging. Subclasses define one worker's fresh
    state and one window."""

    task: TruncatedTask
    num_workers: int = 8
    truncation: int = 10
    stagger: bool = True

    def __post_init__(self) -> None:
        if self.num_workers < 1 or self.truncation < 1:
            raise UserError(
                f"num_workers and truncation must be positive, got {self.num_workers}, "
                f"{self.truncation}"
            )

    @abc.abstractmethod
    def fresh(self, key: jax.Array, theta: Theta) -> Any:
        """One worker's state at the start of its first episode."""

    @abc.abstractmethod
    def window(self, theta: Theta, state: Any, key: jax.Array) -> tuple[Theta, jax.Array, Any]:
        """One worker's window: (gradient estimate, window loss, next state)."""

    def init(self, key: jax.Array, theta: Theta) -> Any:
        """Workers spread uniformly over the windows of an episode (when `stagger`)."""
        k_fresh, k_offset, k_run = jax.random.split(key, 3)
        state = jax.vmap(self.fresh, (0, None))(jax.random.split(k_fresh, self.num_workers), theta)
        if not self.stagger or self.task.horizon is None:
            return state
        windows = -(-self.task.horizon // self.truncation)
        offset = jax.random.randint(k_offset, (self.num_workers,), 0, windows)

        def advance(j, state):
            keys = jax.random.split(jax.random.fold_in(k_run, j), self.num_workers)
            _, _, nxt = jax.vmap(self.window, (None, 0, 0))(theta, state, keys)
            moved = j < offset
            return jax.tree_util.tree_map(
                lambda a, b: jnp.where(moved.reshape((-1,) + (1,) * (a.ndim - 1)), a, b), nxt, state
            )

        return jax.lax.fori_loop(0, windows - 1, advance, state)

    def per_worker(self, theta: Theta, state: Any, key: jax.Array) -> tuple[Theta, jax.Array, Any]:
        """Every worker's estimate [W, ...], window loss [W] and next state."""
        keys = jax.random.split(key, self.num_workers)
        return jax.vmap(self.window, (None, 0, 0))(theta, state, keys)

    def estimate(self, theta: Theta, state: Any, key: jax.Array, step: jax.Array) -> Estimate:
        del step
        grads, losses, state = self.per_worker(theta, state, key)
        loss = losses.mean()
        return Estimate(loss, _mean0(grads), state, {"loss": loss})


@dataclasses.dataclass(frozen=True)
class TruncatedBackprop(TruncatedEstimator):
    """Backprop through one window of `truncation` steps; no gradient flows into the past."""

    def fresh(self, key: jax.Array, theta: Theta) -> Worker:
        return new_worker(self.task, key)

    def window(self, theta, state, key):
        state = jax.lax.stop_gradient(state)

        def loss(th):
            u = unroll(self.task, th, state, key, self.truncation)
            return u.losses.mean(), u.worker

        (value, worker), grad = jax.value_and_grad(loss, has_aux=True)(theta)
        return grad, value, worker


@dataclasses.dataclass(frozen=True)
class _Antithetic(TruncatedEstimator):
    sigma: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.sigma > 0:
            raise UserError(f"sigma must be positive, got {self.sigma}")

    def _pair(self, theta, eps, pos: Worker, neg: Worker, key, length: int | None = None):
        """Unroll the +eps and -eps particles over one window (or `length` steps) on the same
        data."""
        length = length or self.truncation
        up = unroll(self.task, jax.tree_util.tree_map(jnp.add, theta, eps), pos, key, length)
        un = unroll(self.task, jax.tree_util.tree_map(jnp.subtract, theta, eps), neg, key, length)
        return up, un


class PESState(NamedTuple):
    pos: Worker
    neg: Worker
    accum: Theta  # noise applied since the current episode began


@dataclasses.dataclass(frozen=True)
class PES(_Antithetic):
    """Persistent evolution strategies with antithetic particles."""

    def fresh(self, key, theta):
        w = new_worker(self.task, key)
        return PESState(w, w, jax.tree_util.tree_map(jnp.zeros_like, theta))

    def window(self, theta, state: PESState, key):
        k_eps, k_data = jax.random.split(key)
        eps = _tree_normal(k_eps, theta, self.sigma)
        up, un = self._pair(theta, eps, state.pos, state.neg, k_data)
        c = (up.losses - un.losses) / (2 * self.sigma**2 * self.truncation)
        # a step after an episode restarted inside this window saw only this window's noise
        same_episode = (jnp.cumsum(up.dones) - up.dones) == 0
        grad = _axpy(c.sum(), eps, _scale((c * same_episode).sum(), state.accum))
        reset = up.dones.any()
        accum = jax.tree_util.tree_map(lambda a, e: jnp.where(reset, e, a + e), state.accum, eps)
        loss = 0.5 * (up.losses.mean() + un.losses.mean())
        return grad, loss, PESState(up.worker, un.worker, accum)


class PairState(NamedTuple):
    pos: Worker
    neg: Worker


@dataclasses.dataclass(frozen=True)
class NRES(_Antithetic):
    """Noise-reuse evolution strategies: the noise is drawn once per episode (from the
    episode's key, so it is regenerated rather than stored). Episodes must span whole windows."""

    def __post_init__(self) -> None:
        super().__post_init__()
        h = self.task.horizon
        if h is not None and h % self.truncation:
            raise UserError(
                f"NRES needs the horizon ({h}) to be a multiple of the truncation "
                f"({self.truncation})"
            )

    def fresh(self, key, theta):
        w = new_worker(self.task, key)
        return PairState(w, w)

    def window(self, theta, state: PairState, key):
        eps = _tree_normal(jax.random.fold_in(episode_key(state.pos), _NOISE), theta, self.sigma)
        up, un = self._pair(theta, eps, state.pos, state.neg, key)
        diff = (up.losses.mean() - un.losses.mean()) / (2 * self.sigma**2)
        loss = 0.5 * (up.losses.mean() + un.losses.mean())
        return _scale(diff, eps), loss, PairState(up.worker, un.worker)


@dataclasses.dataclass(frozen=True)
class TruncatedES(_Antithetic):
    """Antithetic ES on each window, both particles starting from the unperturbed state,
    which then advances under theta itself."""

    def fresh(self, key, theta):
        return new_worker(self.task, key)

    def window(self, theta, state: Worker, key):
        k_eps, k_data = jax.random.split(key)
        eps = _tree_normal(k_eps, theta, self.sigma)
        up, un = self._pair(theta, eps, state, state, k_data)
        diff = (up.losses.mean() - un.losses.mean()) / (2 * self.sigma**2)
        nxt = unroll(self.task, theta, state, k_data, self.truncation)
        return _scale(diff, eps), nxt.losses.mean(), nxt.worker


@dataclasses.dataclass(frozen=True)
class FullES(_Antithetic):
    """Antithetic ES over whole episodes from fresh states (`truncation` is unused; workers
    keep no state, so there is nothing to stagger)."""

    stagger: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.task.horizon is None:
            raise UserError("FullES needs episodes: the task's horizon is None")

    def fresh(self, key, theta):
        return jnp.zeros(())  # stateless

    def window(self, theta, state, key):
        k_eps, k_worker, k_data = jax.random.split(key, 3)
        eps = _tree_normal(k_eps, theta, self.sigma)
        w = new_worker(self.task, k_worker)
        up, un = self._pair(theta, eps, w, w, k_data, self.task.horizon)
        diff = (up.losses.mean() - un.losses.mean()) / (2 * self.sigma**2)
        return _scale(diff, eps), 0.5 * (up.losses.mean() + un.losses.mean()), state


@dataclasses.dataclass(frozen=True)
class Mixture:
    """Several estimators sharing theta on different systems (inner problems of different
    shapes, which cannot share one vmap): their estimates averaged with weights proportional
    to their workers. Metrics: the mixed loss and each part's as `loss/<i>`."""

    parts: tuple[TruncatedEstimator, ...]

    def __post_init__(self) -> None:
        if not self.parts:
            raise UserError("a Mixture needs at least one estimator")

    def init(self, key: jax.Array, theta: Theta) -> tuple:
        return tuple(p.init(jax.random.fold_in(key, i), theta) for i, p in enumerate(self.parts))

    def estimate(self, theta: Theta, state: tuple, key: jax.Array, step: jax.Array) -> Estimate:
        total = sum(p.num_workers for p in self.parts)
        ests = [
            p.estimate(theta, s, jax.random.fold_in(key, i), step)
            for i, (p, s) in enumerate(zip(self.parts, state, strict=True))
        ]
        weights = [p.num_workers / total for p in self.parts]
        loss = sum(w * e.loss for w, e in zip(weights, ests, strict=True))
        grad = jax.tree_util.tree_map(
            lambda *gs: sum(w * g for w, g in zip(weights, gs, strict=True)),
            *(e.grad for e in ests),
        )
        metrics = {"loss": loss} | {f"loss/{i}": e.loss for i, e in enumerate(ests)}
        return Estimate(loss, grad, tuple(e.state for e in ests), metrics)


ESTIMATORS = {
    "tbptt": TruncatedBackprop,
    "truncated_es": TruncatedES,
    "pes": PES,
    "nres": NRES,
    "full_es": FullES,
}

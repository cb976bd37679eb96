"""Gradient estimators for truncated unrolls of a `TruncatedTask`, as values.

Each factory returns a `Workers` estimator: `num_workers` workers (antithetic pairs count
once), each at its own point of its episode (`stagger`), whose per-worker estimates of one
window are averaged. What a worker does in a window is a `WindowRule`; `workers` is the one
combinator that vectorizes a rule over workers, and the one place their axis is sharded over
the device mesh (`meta.sharding`), for every estimator alike.

- `truncated_backprop`: backprop through each window, the incoming state held fixed (biased:
  it ignores how theta shaped the state; Metz et al. 2021 show why full backprop is no cure).
- `truncated_es`: antithetic ES on each window from the unperturbed state (biased likewise).
- `pes`: Persistent ES (Vicol, Metz & Sohl-Dickstein 2021): particles keep their perturbed
  trajectories and the noise accumulated since the episode began; unbiased.
- `nres`: Noise-Reuse ES (Li et al. 2023): one noise per episode, reused by every window;
  unbiased, with lower variance than PES.
- `full_es`: antithetic ES over whole episodes.
- `mixture`: several of them on different systems, sharing theta.

All take the same keywords (`num_workers`, `truncation`, `sigma`, `stagger`), so callers pick
one from `ESTIMATORS` by name without knowing which it is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from metalearn.core.errors import UserError
from metalearn.meta.objective import Estimate, Theta
from metalearn.meta.sharding import shard_tasks
from metalearn.meta.truncated import TruncatedTask, Worker, episode_key, new_worker, unroll

_NOISE = 0x6E6F6973  # folded into an episode key for NRES noise


class WindowRule(NamedTuple):
    """What one worker does: its state at the start of its first episode, and one window
    (gradient estimate, window loss, next state)."""

    fresh: Callable[[jax.Array, Theta], Any]
    window: Callable[[Theta, Any, jax.Array], tuple[Theta, jax.Array, Any]]


class Workers(NamedTuple):
    """A gradient estimator of vectorized workers (the loop calls `init` and `estimate`;
    `per_worker` gives every worker's own estimate, for diagnostics)."""

    init: Callable[[jax.Array, Theta], Any]
    estimate: Callable[[Theta, Any, jax.Array, jax.Array], Estimate]
    per_worker: Callable[[Theta, Any, jax.Array], tuple[Theta, jax.Array, Any]]
    num_workers: int


def workers(
    task: TruncatedTask, rule: WindowRule, num_workers: int, truncation: int, stagger: bool
) -> Workers:
    """`num_workers` workers following `rule`; with `stagger`, spread uniformly over the
    windows of an episode at the start. The worker axis is sharded over the active mesh."""
    if num_workers < 1 or truncation < 1:
        raise UserError(
            f"num_workers and truncation must be positive, got {num_workers}, {truncation}"
        )
    all_windows = jax.vmap(rule.window, (None, 0, 0))

    def per_worker(theta, state, key):
        keys = jax.random.split(key, num_workers)
        return all_windows(theta, shard_tasks(state), shard_tasks(keys))

    def init(key, theta):
        k_fresh, k_offset, k_run = jax.random.split(key, 3)
        fresh_keys = shard_tasks(jax.random.split(k_fresh, num_workers))
        state = jax.vmap(rule.fresh, (0, None))(fresh_keys, theta)
        if not stagger or task.horizon is None:
            return state
        windows = -(-task.horizon // truncation)
        offset = jax.random.randint(k_offset, (num_workers,), 0, windows)

        def advance(j, state):
            _, _, nxt = per_worker(theta, state, jax.random.fold_in(k_run, j))
            moved = j < offset
            return jax.tree_util.tree_map(
                lambda a, b: jnp.where(moved.reshape((-1,) + (1,) * (a.ndim - 1)), a, b), nxt, state
            )

        return jax.lax.fori_loop(0, windows - 1, advance, state)

    def estimate(theta, state, key, step):
        del step
        grads, losses, state = per_worker(theta, state, key)
        loss = losses.mean()
        return Estimate(loss, _mean0(grads), state, {"loss": loss})

    return Workers(init, estimate, per_worker, num_workers)


# -- the window rules ------------------------------------------------------------------------


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


def _check_sigma(sigma: float) -> None:
    if not sigma > 0:
        raise UserError(f"sigma must be positive, got {sigma}")


def _pair(task, theta, eps, pos: Worker, neg: Worker, key, length: int):
    """Unroll the +eps and -eps particles over `length` steps on the same data."""
    up = unroll(task, jax.tree_util.tree_map(jnp.add, theta, eps), pos, key, length)
    un = unroll(task, jax.tree_util.tree_map(jnp.subtract, theta, eps), neg, key, length)
    return up, un


def _es_diff(up, un, sigma: float) -> jax.Array:
    return (up.losses.mean() - un.losses.mean()) / (2 * sigma**2)


def _pair_loss(up, un) -> jax.Array:
    return 0.5 * (up.losses.mean() + un.losses.mean())


class PESState(NamedTuple):
    pos: Worker
    neg: Worker
    accum: Theta  # noise applied since the current episode began


class PairState(NamedTuple):
    pos: Worker
    neg: Worker


def truncated_backprop(
    task: TruncatedTask,
    *,
    num_workers: int = 8,
    truncation: int = 10,
    sigma: float | None = None,
    stagger: bool = True,
    remat: bool = False,
) -> Workers:
    """Backprop through one window of `truncation` steps; no gradient flows into the past.
    (`sigma` is accepted for a uniform signature; backprop perturbs nothing.) `remat`
    recomputes each inner step in the backward pass (`meta.truncated.unroll`)."""
    del sigma

    def fresh(key, theta):
        return new_worker(task, key)

    def window(theta, state, key):
        state = jax.lax.stop_gradient(state)

        def loss(th):
            u = unroll(task, th, state, key, truncation, remat=remat)
            return u.losses.mean(), u.worker

        (value, worker), grad = jax.value_and_grad(loss, has_aux=True)(theta)
        return grad, value, worker

    return workers(task, WindowRule(fresh, window), num_workers, truncation, stagger)


def pes(
    task: TruncatedTask,
    *,
    num_workers: int = 8,
    truncation: int = 10,
    sigma: float = 0.01,
    stagger: bool = True,
) -> Workers:
    """Persistent evolution strategies with antithetic particles."""
    _check_sigma(sigma)

    def fresh(key, theta):
        w = new_worker(task, key)
        return PESState(w, w, jax.tree_util.tree_map(jnp.zeros_like, theta))

    def window(theta, state: PESState, key):
        k_eps, k_data = jax.random.split(key)
        eps = _tree_normal(k_eps, theta, sigma)
        up, un = _pair(task, theta, eps, state.pos, state.neg, k_data, truncation)
        c = (up.losses - un.losses) / (2 * sigma**2 * truncation)
        # a step after an episode restarted inside this window saw only this window's noise
        same_episode = (jnp.cumsum(up.dones) - up.dones) == 0
        grad = _axpy(c.sum(), eps, _scale((c * same_episode).sum(), state.accum))
        reset = up.dones.any()
        accum = jax.tree_util.tree_map(lambda a, e: jnp.where(reset, e, a + e), state.accum, eps)
        return grad, _pair_loss(up, un), PESState(up.worker, un.worker, accum)

    return workers(task, WindowRule(fresh, window), num_workers, truncation, stagger)


def nres(
    task: TruncatedTask,
    *,
    num_workers: int = 8,
    truncation: int = 10,
    sigma: float = 0.01,
    stagger: bool = True,
) -> Workers:
    """Noise-reuse evolution strategies: the noise is drawn once per episode (from the
    episode's key, so it is regenerated rather than stored). Episodes must span whole
    windows."""
    _check_sigma(sigma)
    if task.horizon is not None and truncation >= 1 and task.horizon % truncation:
        raise UserError(
            f"NRES needs the horizon ({task.horizon}) to be a multiple of the truncation "
            f"({truncation})"
        )

    def fresh(key, theta):
        w = new_worker(task, key)
        return PairState(w, w)

    def window(theta, state: PairState, key):
        eps = _tree_normal(jax.random.fold_in(episode_key(state.pos), _NOISE), theta, sigma)
        up, un = _pair(task, theta, eps, state.pos, state.neg, key, truncation)
        return (
            _scale(_es_diff(up, un, sigma), eps),
            _pair_loss(up, un),
            PairState(up.worker, un.worker),
        )

    return workers(task, WindowRule(fresh, window), num_workers, truncation, stagger)


def truncated_es(
    task: TruncatedTask,
    *,
    num_workers: int = 8,
    truncation: int = 10,
    sigma: float = 0.01,
    stagger: bool = True,
) -> Workers:
    """Antithetic ES on each window, both particles starting from the unperturbed state,
    which then advances under theta itself."""
    _check_sigma(sigma)

    def fresh(key, theta):
        return new_worker(task, key)

    def window(theta, state: Worker, key):
        k_eps, k_data = jax.random.split(key)
        eps = _tree_normal(k_eps, theta, sigma)
        up, un = _pair(task, theta, eps, state, state, k_data, truncation)
        nxt = unroll(task, theta, state, k_data, truncation)
        return _scale(_es_diff(up, un, sigma), eps), nxt.losses.mean(), nxt.worker

    return workers(task, WindowRule(fresh, window), num_workers, truncation, stagger)


def full_es(
    task: TruncatedTask,
    *,
    num_workers: int = 8,
    truncation: int = 10,
    sigma: float = 0.01,
    stagger: bool = False,
) -> Workers:
    """Antithetic ES over whole episodes from fresh states. Workers keep no state, so there
    is nothing to stagger (`stagger` is ignored) and each estimate unrolls a whole episode
    (`truncation` is only validated)."""
    _check_sigma(sigma)
    if task.horizon is None:
        raise UserError("FullES needs episodes: the task's horizon is None")
    del stagger

    def fresh(key, theta):
        return jnp.zeros(())  # stateless

    def window(theta, state, key):
        k_eps, k_worker, k_data = jax.random.split(key, 3)
        eps = _tree_normal(k_eps, theta, sigma)
        w = new_worker(task, k_worker)
        up, un = _pair(task, theta, eps, w, w, k_data, task.horizon)
        return _scale(_es_diff(up, un, sigma), eps), _pair_loss(up, un), state

    return workers(task, WindowRule(fresh, window), num_workers, truncation, False)


class Mixture(NamedTuple):
    """Several estimators on different systems sharing theta (see `mixture`)."""

    init: Callable[[jax.Array, Theta], tuple]
    estimate: Callable[[Theta, tuple, jax.Array, jax.Array], Estimate]
    parts: tuple[Workers, ...]


def mixture(parts: tuple[Workers, ...] | list[Workers]) -> Mixture:
    """Estimators sharing theta on different systems (inner problems of different shapes,
    which cannot share one vmap): their estimates averaged with weights proportional to their
    workers. Metrics: the mixed loss and each part's as `loss/<i>`."""
    parts = tuple(parts)
    if not parts:
        raise UserError("a mixture needs at least one estimator")
    total = sum(p.num_workers for p in parts)
    weights = [p.num_workers / total for p in parts]

    def init(key, theta):
        return tuple(p.init(jax.random.fold_in(key, i), theta) for i, p in enumerate(parts))

    def estimate(theta, state, key, step):
        ests = [
            p.estimate(theta, s, jax.random.fold_in(key, i), step)
            for i, (p, s) in enumerate(zip(parts, state, strict=True))
        ]
        loss = sum(w * e.loss for w, e in zip(weights, ests, strict=True))
        grad = jax.tree_util.tree_map(
            lambda *gs: sum(w * g for w, g in zip(weights, gs, strict=True)),
            *(e.grad for e in ests),
        )
        metrics = {"loss": loss} | {f"loss/{i}": e.loss for i, e in enumerate(ests)}
        return Estimate(loss, grad, tuple(e.state for e in ests), metrics)

    return Mixture(init, estimate, parts)


ESTIMATORS: dict[str, Callable[..., Workers]] = {
    "tbptt": truncated_backprop,
    "truncated_es": truncated_es,
    "pes": pes,
    "nres": nres,
    "full_es": full_es,
}

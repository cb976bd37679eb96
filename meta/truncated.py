"""Truncated unrolls: systems meta-trained through long inner loops, a window at a time.

A user system implements `TruncatedTask`: a fresh inner state from a key, and one inner step
under meta-parameters theta that returns the new state and that step's loss. The backbone
counts steps, ends episodes after `horizon` steps (None: one continuing stream, never reset),
resets on done, and vectorizes over workers, each at its own point of its episode.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

from metalearn.meta.objective import Theta

InnerState = Any


class TruncatedTask(Protocol):
    """A system unrolled in windows (a learned optimizer training an inner model, or a toy
    dynamical system)."""

    horizon: int | None  # steps per episode; None: a continuing stream that never resets

    def init(self, key: jax.Array) -> InnerState:
        """The state at the start of an episode."""
        ...

    def step(self, theta: Theta, state: InnerState, key: jax.Array) -> tuple[InnerState, jax.Array]:
        """One inner step: the new state and this step's (scalar) loss."""
        ...


class Worker(NamedTuple):
    """One worker's place in its episodes."""

    inner: InnerState
    t: jax.Array  # steps taken in the current episode
    episode: jax.Array  # episodes started so far (keys each episode's fresh state)
    key: jax.Array  # the worker's own key


class Unrolled(NamedTuple):
    worker: Worker
    losses: jax.Array  # [K] per-step losses
    dones: jax.Array  # [K] True where that step ended an episode


def episode_key(worker: Worker) -> jax.Array:
    """The key of the worker's current episode: its fresh state and its noise (NRES) come
    from it, so two particles of one worker always share them."""
    return jax.random.fold_in(worker.key, worker.episode)


def new_worker(task: TruncatedTask, key: jax.Array) -> Worker:
    zero = jnp.zeros((), jnp.int32)
    worker = Worker(None, zero, zero, key)
    return worker._replace(inner=task.init(episode_key(worker)))


def unroll(
    task: TruncatedTask,
    theta: Theta,
    worker: Worker,
    key: jax.Array,
    length: int,
    start: int = 0,
    remat: bool = False,
) -> Unrolled:
    """`length` inner steps of one worker; an episode that ends restarts from a fresh state.
    Step i draws its randomness from fold_in(key, start + i) (`start` continues a stream).
    `remat`: differentiated, each step is recomputed in the backward pass (`jax.checkpoint`)
    rather than its intermediates kept: memory for one window's inner states, not all its
    activations."""

    def successor(w: Worker) -> InnerState:
        return task.init(jax.random.fold_in(w.key, w.episode + 1))

    # a window no longer than an episode ends at most one: the next episode's fresh state is
    # then made once per window, not at every step (vectorized, every step would pay for it)
    once = task.horizon is not None and length <= task.horizon
    next_fresh = successor(worker) if once else None

    def body(w: Worker, i: jax.Array):
        inner, loss = task.step(theta, w.inner, jax.random.fold_in(key, i))
        t = w.t + 1
        done = jnp.asarray(False) if task.horizon is None else t >= task.horizon
        nxt = Worker(inner, t, w.episode, w.key)
        if task.horizon is not None:
            fresh = next_fresh if once else successor(w)
            pick = lambda a, b: jnp.where(done, a, b)  # noqa: E731
            nxt = Worker(
                jax.tree_util.tree_map(pick, fresh, inner),
                pick(jnp.zeros_like(t), t),
                pick(w.episode + 1, w.episode),
                w.key,
            )
        return nxt, (loss, done)

    step = jax.checkpoint(body) if remat else body
    worker, (losses, dones) = jax.lax.scan(step, worker, start + jnp.arange(length))
    return Unrolled(worker, losses, dones)


def episode_loss(task: TruncatedTask, theta: Theta, key: jax.Array) -> jax.Array:
    """Mean loss over one whole episode from a fresh state: the meta-objective that the
    unbiased estimators target. Differentiate it for the exact meta-gradient."""
    if task.horizon is None:
        raise ValueError("a continuing stream (horizon None) has no episode loss")
    worker = new_worker(task, key)
    return unroll(task, theta, worker, jax.random.fold_in(key, 1), task.horizon).losses.mean()

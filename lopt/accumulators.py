"""Running statistics of gradients shared by the learned optimizers: momenta, second moments,
and Adafactor's factored second moments (Shazeer & Stern 2018), each at several decays.

Every statistic of a tensor of shape S is stored as S + (D,), D decays on the last axis; no bias
correction (the optimizers learn what to make of early steps). Factored statistics follow
learned_optimization's conventions so that released weights see the features they were trained on.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from metalearn.lopt.blocks import split


def ema(old: jax.Array, new: jax.Array, decays: jax.Array) -> jax.Array:
    """decays * old + (1 - decays) * new, new broadcast over the decay axis."""
    decays = decays.reshape((1,) * (old.ndim - 1) + (-1,))  # explicit: no rank promotion
    return decays * old + (1 - decays) * new[..., None]


def factored_dims(shape: tuple[int, ...]) -> tuple[int, int] | None:
    """(d0, d1): the largest and second-largest axes of a tensor of rank >= 2 (ties keep axis
    order), or None for vectors and scalars, which keep an unfactored estimate."""
    if len(shape) < 2:
        return None
    order = np.argsort(shape, kind="stable")
    return int(order[-1]), int(order[-2])


class Factored(NamedTuple):
    """Adafactor statistics of one tensor; the unused ones are empty arrays [0, D]."""

    v_row: jax.Array  # mean of g^2 over axis d0: S without d0, + (D,)
    v_col: jax.Array  # mean of g^2 over axis d1: S without d1, + (D,)
    v_diag: jax.Array  # unfactored g^2 (rank < 2): S + (D,)


def factored_init(p: jax.Array, num_decays: int, dtype=jnp.float32) -> Factored:
    """Zero statistics for a tensor like p (in float32, whatever p's dtype)."""
    empty = jnp.zeros((0, num_decays), dtype)
    dims = factored_dims(p.shape)
    if dims is None:
        return Factored(empty, empty, jnp.zeros(p.shape + (num_decays,), dtype))
    d0, d1 = dims
    row = tuple(s for i, s in enumerate(p.shape) if i != d0)
    col = tuple(s for i, s in enumerate(p.shape) if i != d1)
    return Factored(
        jnp.zeros(row + (num_decays,), dtype), jnp.zeros(col + (num_decays,), dtype), empty
    )


class FactoredStep(NamedTuple):
    """The advanced statistics and features derived from them, each of rank len(S) + 1 and
    broadcastable to S + (D,) (row and column statistics keep a size-1 axis)."""

    state: Factored
    row: jax.Array  # v_row with axis d0 restored (unfactored: v_diag)
    col: jax.Array  # v_col with axis d1 restored (unfactored: v_diag)
    factor_a: jax.Array  # g * factor_a * factor_b: g preconditioned by the estimate
    factor_b: jax.Array

    @property
    def factored(self) -> bool:
        return self.state.v_diag.size == 0

    def fac_g(self, g: jax.Array) -> jax.Array:
        return g[..., None] * self.factor_a * self.factor_b


def factored_update(state: Factored, g: jax.Array, decays: jax.Array) -> FactoredStep:
    """Advance the factored second moment with gradient g."""
    gs = g * g + 1e-30
    dims = factored_dims(g.shape)
    if dims is None:
        v = ema(state.v_diag, gs, decays)
        ones = jnp.ones((1,) * v.ndim, v.dtype)
        inv = jax.lax.rsqrt(jnp.maximum(v + 1e-9, 1e-9))
        return FactoredStep(Factored(state.v_row, state.v_col, v), v, v, inv, ones)
    d0, d1 = dims
    v_row = ema(state.v_row, jnp.mean(gs, axis=d0), decays)
    v_col = ema(state.v_col, jnp.mean(gs, axis=d1), decays)
    r1 = d1 - 1 if d1 > d0 else d1  # d1's position once d0 is gone
    row_mean = jnp.mean(v_row, axis=r1, keepdims=True)
    row_factor = jax.lax.rsqrt(jnp.maximum(v_row / (row_mean + 1e-9), 1e-9))
    col_factor = jax.lax.rsqrt(jnp.maximum(v_col, 1e-9))
    return FactoredStep(
        Factored(v_row, v_col, state.v_diag),
        jnp.expand_dims(v_row, d0),
        jnp.expand_dims(v_col, d1),
        jnp.expand_dims(row_factor, d0),
        jnp.expand_dims(col_factor, d1),
    )


class Channels(NamedTuple):
    """Per-parameter feature channels made from the statistics, a list per decay."""

    m: list[jax.Array]  # momenta
    rms: jax.Array  # the second moment (one decay)
    r: jax.Array  # its inverse root
    g_fac: list[jax.Array]  # the gradient preconditioned by each factored estimate
    row: list[jax.Array]  # row and column statistics (unfactored: the diagonal estimate)
    col: list[jax.Array]
    inv_roots: list[jax.Array]  # inverse roots of row, then of col
    m_fac: list[jax.Array]  # the momenta preconditioned by the factored estimates


def adafactor_channels(factored: bool, g, m, rms, row, col, fa, fb, diag_eps: float) -> Channels:
    """The channels AdafacMLPLOpt and VeLO share, for a tensor or a block of its rows: `row`,
    `col`, `fa`, `fb` come from `FactoredStep` (maybe broadcast), `m` is [..., D] and `rms`
    [..., 1]. An unfactored tensor's momenta are preconditioned by the diagonal estimate,
    (v + diag_eps) ** -0.5."""
    d = m.shape[-1]
    fa, fb = (jnp.broadcast_to(x, x.shape[:-1] + (d,)) for x in (fa, fb))  # fb may be 1 wide
    m, row, col, fa, fb = split(m), split(row), split(col), split(fa), split(fb)
    rms = rms[..., 0]
    fac = [a * b for a, b in zip(fa, fb, strict=True)]
    if factored:
        m_fac = [x * f for x, f in zip(m, fac, strict=True)]
    else:
        m_fac = [x * (v + diag_eps) ** -0.5 for x, v in zip(m, row, strict=True)]
    return Channels(
        m,
        rms,
        jax.lax.rsqrt(rms + 1e-6),
        [g * f for f in fac],
        row,
        col,
        [jax.lax.rsqrt(x + 1e-8) for x in row + col],
        m_fac,
    )

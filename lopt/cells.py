"""The LSTM cell of the per-tensor learned optimizers (RNNMLPLOpt, VeLO)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from metalearn.lopt.base import Theta


def lstm_cell(
    w: Theta, x_TI: jax.Array, h_TH: jax.Array, c_TH: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Haiku's LSTM cell (the released VeLO weights use it): gates i, g, f, o from one linear
    map `w` of [x, h]; the forget gate is biased by +1. Returns the new hidden and cell."""
    z = jnp.concatenate([x_TI, h_TH], -1) @ w["w"]
    z = z + jnp.broadcast_to(w["b"], z.shape)
    i, g, f, o = jnp.split(z, 4, axis=-1)
    c = jax.nn.sigmoid(f + 1) * c_TH + jax.nn.sigmoid(i) * jnp.tanh(g)
    return jax.nn.sigmoid(o) * jnp.tanh(c), c

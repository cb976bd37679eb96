"""An LSTM over GPICL tokens: GPICL's state-size comparison (its state is O(width), not O(T))."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from metalearn.icl.tokens import previous


class LSTMLayer(nnx.Module):
    """One LSTM layer; the input projection of all steps is one matmul outside the scan."""

    def __init__(self, in_size: int, width: int, *, rngs: nnx.Rngs):
        self.width = width
        self.wx = nnx.Linear(in_size, 4 * width, rngs=rngs)
        self.wh = nnx.Linear(width, 4 * width, use_bias=False, rngs=rngs)

    def __call__(self, x_BTI: jax.Array) -> jax.Array:
        b = x_BTI.shape[0]
        gates_TBG = jnp.swapaxes(self.wx(x_BTI), 0, 1)
        # forget-gate bias of +1 (Jozefowicz et al. 2015) so memory persists early in training
        forget_bias = jnp.zeros(4 * self.width).at[self.width : 2 * self.width].set(1.0)
        wh = self.wh.kernel[...]

        def step(carry, g_BG):
            h, c = carry
            i, f, o, u = jnp.split(g_BG + h @ wh + forget_bias[None], 4, axis=-1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(u)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (h, c), h

        zeros = jnp.zeros((b, self.width), gates_TBG.dtype)
        _, h_TBW = jax.lax.scan(step, (zeros, zeros), gates_TBG)
        return jnp.swapaxes(h_TBW, 0, 1)


class LSTM(nnx.Module):
    """Tokens [B, T, token_size] -> outputs [B, T, out_size], causal by construction;
    `shift` as the transformer's."""

    def __init__(
        self,
        token_size: int,
        out_size: int,
        max_length: int,
        *,
        depth: int = 2,
        width: int = 64,
        shift: bool = True,
        rngs: nnx.Rngs,
    ):
        del max_length  # a recurrent model has no length limit
        # the token shift (icl/transformer.py): the first layer reads [token_t, token_{t-1}],
        # so one step sees a whole (x_{t-1}, y_{t-1}) pair
        self.shift = shift
        sizes = [token_size * (2 if shift else 1)] + [width] * depth
        self.layers = nnx.List([LSTMLayer(sizes[i], width, rngs=rngs) for i in range(depth)])
        self.head = nnx.Linear(width, out_size, rngs=rngs)

    def __call__(self, tok_BTK: jax.Array) -> jax.Array:
        h = jnp.concatenate([tok_BTK, previous(tok_BTK)], -1) if self.shift else tok_BTK
        for layer in self.layers:
            h = layer(h)
        return self.head(h)

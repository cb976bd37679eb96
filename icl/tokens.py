"""GPICL's token format: token t is [x_t, y_{t-1}] (one token per example, zeros at t = 0)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def label_features(y_NL: jax.Array, num_classes: int | None) -> jax.Array:
    """One-hot labels for classification, the value itself (as a feature) for regression."""
    if num_classes is None:
        return y_NL[..., None].astype(jnp.float32)
    return jax.nn.one_hot(y_NL, num_classes, dtype=jnp.float32)


def tokens(x_NLD: jax.Array, y_NL: jax.Array, num_classes: int | None) -> jax.Array:
    """Tokens [N, L, D + C]: x_t beside the previous example's label."""
    feats = label_features(y_NL, num_classes)
    prev = jnp.pad(feats[:, :-1], ((0, 0), (1, 0), (0, 0)))
    return jnp.concatenate([x_NLD.astype(jnp.float32), prev], axis=-1)


def previous(tok_BTK: jax.Array) -> jax.Array:
    """Each token's predecessor (zeros at t = 0): the input of the token shift, which lets a
    model see x_{t-1} and y_{t-1} (split over tokens t-1 and t by the format) in one place."""
    return jnp.pad(tok_BTK[:, :-1], ((0, 0), (1, 0), (0, 0)))


def token_size(input_dim: int, num_classes: int | None) -> int:
    return input_dim + (1 if num_classes is None else num_classes)

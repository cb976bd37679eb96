"""MLPLOpt: a small MLP applied to every parameter separately (Metz et al. 2019, 2020).

Features of each parameter: its gradient, its value, momenta of the gradient at several
decays, the gradient and momenta divided by the root of a second-moment estimate, and the
training step through tanh at several time scales. Each feature is normalized by its root mean
square over the tensor, so one MLP serves tensors of every scale. The MLP outputs a direction
d and a log-magnitude m; the update is -step_mult * d * exp(exp_mult * m).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from lopt.base import Theta

DECAYS = (0.5, 0.9, 0.99, 0.999)
TIMESCALES = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0)


class MLPLOptState(NamedTuple):
    momenta: optax.Params  # per parameter: [..., len(DECAYS)]
    rms: optax.Params  # second-moment estimate
    step: jax.Array


def _normalize(f: jax.Array) -> jax.Array:
    """Each feature (last axis) divided by its root mean square over the tensor."""
    axes = tuple(range(f.ndim - 1))
    return f * jax.lax.rsqrt(jnp.mean(f * f, axis=axes, keepdims=True) + 1e-12)


@dataclasses.dataclass(frozen=True)
class MLPLOpt:
    """A per-parameter MLP learned optimizer."""

    hidden: int = 32
    layers: int = 2
    step_mult: float = 1e-3
    exp_mult: float = 1e-3
    name: str = "mlp_lopt"

    @property
    def num_features(self) -> int:
        # g, p, momenta, rsqrt(v) * (g, momenta), step features
        return 2 + 2 * len(DECAYS) + 1 + len(TIMESCALES)

    def init(self, key: jax.Array) -> Theta:
        sizes = [self.num_features] + [self.hidden] * self.layers + [2]
        keys = jax.random.split(key, len(sizes) - 1)
        return {
            f"layer{i}": {
                "w": jax.random.normal(k, (a, b)) / jnp.sqrt(a),
                "b": jnp.zeros(b),
            }
            for i, (k, a, b) in enumerate(zip(keys, sizes[:-1], sizes[1:], strict=True))
        }

    def _mlp(self, theta: Theta, f: jax.Array) -> jax.Array:
        h = f
        n = len(theta)
        for i in range(n):
            h = h @ theta[f"layer{i}"]["w"] + theta[f"layer{i}"]["b"]
            if i < n - 1:
                h = jax.nn.relu(h)
        return h

    def optimizer(self, theta: Theta) -> optax.GradientTransformationExtraArgs:
        decays = jnp.asarray(DECAYS)
        scales = jnp.asarray(TIMESCALES)

        def init(params: optax.Params) -> MLPLOptState:
            zeros = lambda p, k: jnp.zeros(p.shape + (k,), p.dtype)  # noqa: E731
            return MLPLOptState(
                jax.tree_util.tree_map(lambda p: zeros(p, len(DECAYS)), params),
                jax.tree_util.tree_map(jnp.zeros_like, params),
                jnp.zeros((), jnp.int32),
            )

        def update(grads, state: MLPLOptState, params=None, **extra):
            del extra
            if params is None:
                raise ValueError("MLPLOpt needs the parameters: call update(grads, state, params)")
            t = state.step.astype(jnp.float32)
            step_feats = jnp.tanh(t / scales)

            def one(g, p, m, v):
                m = decays * m + (1 - decays) * g[..., None]
                v = 0.999 * v + 0.001 * g * g
                inv = jax.lax.rsqrt(v + 1e-8)[..., None]
                feats = jnp.concatenate(
                    [g[..., None], p[..., None], m, inv * g[..., None], inv * m], axis=-1
                )
                feats = _normalize(feats)
                time = jnp.broadcast_to(step_feats, g.shape + step_feats.shape)
                out = self._mlp(theta, jnp.concatenate([feats, time], axis=-1))
                step = self.step_mult * out[..., 0] * jnp.exp(self.exp_mult * out[..., 1])
                return -step.astype(p.dtype), m, v

            tree = jax.tree_util.tree_structure(params)
            results = [
                one(g, p, m, v)
                for g, p, m, v in zip(
                    tree.flatten_up_to(grads),
                    tree.flatten_up_to(params),
                    tree.flatten_up_to(state.momenta),
                    tree.flatten_up_to(state.rms),
                    strict=True,
                )
            ]
            updates, momenta, rms = (tree.unflatten(r) for r in zip(*results, strict=True))
            return updates, MLPLOptState(momenta, rms, state.step + 1)

        return optax.GradientTransformationExtraArgs(init, update)

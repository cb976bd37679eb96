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
BLOCK_FLOATS = 2**18  # hidden activations per block of the per-parameter MLP (~1 MB)


class MLPLOptState(NamedTuple):
    momenta: optax.Params  # per parameter: [..., len(DECAYS)]
    rms: optax.Params  # second-moment estimate
    step: jax.Array


def _blocks(fn, arrays: tuple[jax.Array, ...], chunk: int) -> jax.Array:
    """fn over rows of `arrays` (each [N, ...]), a cache-sized block at a time for big tensors:
    materializing features and hidden activations for a whole 1M-parameter tensor would stream
    them through memory at every layer."""
    n = arrays[0].shape[0]
    if n <= chunk:
        return fn(*arrays)
    blocks = -(-n // chunk)

    def split(a):
        a = jnp.pad(a, [(0, blocks * chunk - n)] + [(0, 0)] * (a.ndim - 1))
        return a.reshape((blocks, chunk) + a.shape[1:])

    out = jax.lax.map(lambda xs: fn(*xs), tuple(split(a) for a in arrays))
    return out.reshape((blocks * chunk,) + out.shape[2:])[:n]


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

    def _mlp(self, theta: Theta, f_NF: jax.Array, time_T: jax.Array) -> jax.Array:
        """The MLP on per-parameter features [N, F] and the step features [T] shared by all
        parameters: their share of the first layer is computed once, not per parameter."""
        n = len(theta)
        w0, b0 = theta["layer0"]["w"], theta["layer0"]["b"]
        f = f_NF.shape[-1]
        h = f_NF @ w0[:f] + (time_T @ w0[f:] + b0)
        for i in range(1, n):
            h = jax.nn.relu(h)
            h = h @ theta[f"layer{i}"]["w"] + theta[f"layer{i}"]["b"]
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
                inv = jax.lax.rsqrt(v + 1e-8)
                # each feature is normalized by its root mean square over the tensor; the
                # statistics come from fused reductions, the features are built per block
                lead = tuple(range(g.ndim))
                sq = jnp.concatenate(
                    [
                        jnp.stack([jnp.mean(g * g), jnp.mean(p * p)]),
                        jnp.mean(m * m, lead),
                        jnp.mean(inv * inv * g * g)[None],
                        jnp.mean((inv * inv)[..., None] * m * m, lead),
                    ]
                )
                scale = jax.lax.rsqrt(sq + 1e-12)

                def block(g, p, m, inv):
                    feats = jnp.concatenate(
                        [g[:, None], p[:, None], m, (inv * g)[:, None], inv[:, None] * m], axis=-1
                    )
                    out = self._mlp(theta, feats * scale, step_feats)
                    return self.step_mult * out[:, 0] * jnp.exp(self.exp_mult * out[:, 1])

                flat = (g.reshape(-1), p.reshape(-1), m.reshape(-1, len(DECAYS)), inv.reshape(-1))
                chunk = max(BLOCK_FLOATS // self.hidden, 1024)
                step = _blocks(block, flat, chunk).reshape(g.shape)
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

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

from metalearn.lopt.accumulators import ema
from metalearn.lopt.base import Theta
from metalearn.lopt.blocks import channel_scales, per_parameter_mlp
from metalearn.lopt.per_tensor import STATE_DTYPE, map_tensors, stat_zeros, update_like

DECAYS = (0.5, 0.9, 0.99, 0.999)
TIMESCALES = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0)


class MLPLOptState(NamedTuple):
    momenta: optax.Params  # per parameter: [..., len(DECAYS)]
    rms: optax.Params  # second-moment estimate
    step: jax.Array


def _features(g, p, m, v) -> list[jax.Array]:
    """The per-parameter feature channels (momenta and second moment after this step)."""
    inv = jax.lax.rsqrt(v + 1e-8)
    ms = [m[..., i] for i in range(m.shape[-1])]
    return [g, p, *ms, inv * g] + [inv * x for x in ms]


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

    def optimizer(self, theta: Theta) -> optax.GradientTransformationExtraArgs:
        decays = jnp.asarray(DECAYS)
        scales = jnp.asarray(TIMESCALES)

        def init(params: optax.Params) -> MLPLOptState:
            rms = jax.tree_util.tree_map(lambda v: v[..., 0], stat_zeros(params, 1))
            return MLPLOptState(stat_zeros(params, len(DECAYS)), rms, jnp.zeros((), jnp.int32))

        def update(grads, state: MLPLOptState, params=None, **extra):
            del extra
            if params is None:
                raise ValueError("MLPLOpt needs the parameters: call update(grads, state, params)")
            t = state.step.astype(jnp.float32)
            step_feats = jnp.tanh(t / scales)

            layer0 = theta["layer0"]
            num_param = self.num_features - len(TIMESCALES)
            # the step features are shared by all parameters: their share of the first layer
            # is computed once, as a bias
            bias0 = step_feats @ layer0["w"][num_param:] + layer0["b"]
            rest = [
                (theta[f"layer{i}"]["w"], theta[f"layer{i}"]["b"]) for i in range(1, len(theta))
            ]

            def one(param, g, m, v):
                p, g = param.astype(STATE_DTYPE), g.astype(STATE_DTYPE)  # computed in float32
                m = ema(m, g, decays)
                v = 0.999 * v + 0.001 * g * g
                sources = [jnp.atleast_1d(x) for x in (g, p, v)]
                sources.insert(2, m.reshape(sources[0].shape + (len(DECAYS),)))
                # each feature is normalized by its root mean square over the tensor
                scale = channel_scales(_features, sources, sources[0].shape, 1e-12)
                layers = [(layer0["w"][:num_param] * scale[:, None], bias0), *rest]
                d, mag = per_parameter_mlp(layers, _features, sources, sources[0].shape)
                step = self.step_mult * d * jnp.exp(self.exp_mult * mag)
                return update_like(step, param), m, v

            updates, momenta, rms = map_tensors(one, params, grads, state.momenta, state.rms)
            return updates, MLPLOptState(momenta, rms, state.step + 1)

        # not jitted here: the caller's jit composes, with theta an argument, so one compiled
        # step serves every theta (see LearnedOptimizer)
        return optax.GradientTransformationExtraArgs(init, update)

"""AdafacMLPLOpt: a tiny per-parameter MLP over momenta, second moments and Adafactor-style
factored second moments, with meta-learned decays (Metz et al. 2022, "Practical tradeoffs
between memory, compute, and performance in learned optimizers", arXiv:2203.11860).

Features of each parameter: gradient, value, momenta (3 decays), second moment, momenta over its
root, its inverse root, the gradient preconditioned by the factored second moment, the row and
column statistics with their inverse roots, and the momenta preconditioned by them - each
normalized by its root mean square over the tensor - plus the training step through tanh at
eleven time scales. The update is -step_mult * d * exp(exp_mult * a).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from metalearn.lopt.accumulators import adafactor_channels, ema, factored_init, factored_update
from metalearn.lopt.base import Theta
from metalearn.lopt.blocks import channel_scales, per_parameter_mlp
from metalearn.lopt.per_tensor import STATE_DTYPE, map_tensors, stat_zeros, update_like

MOMENTUM_DECAYS = (0.9, 0.99, 0.999)
RMS_DECAYS = (0.999,)
ADAFACTOR_DECAYS = (0.9, 0.99, 0.999)
TIMESCALES = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1e3, 3e3, 1e4, 3e4, 1e5)
NUM_FEATURES = 28  # per-parameter channels before the time features


def decay(base: tuple[float, ...], offset: jax.Array) -> jax.Array:
    """A decay learned as an offset in log(1 - decay) / 10, starting (offset 0) at `base`."""
    return jnp.clip(1 - (1 - jnp.asarray(base)) * jnp.exp(10 * offset), 0.0, 1.0)


class AdafacState(NamedTuple):
    momenta: optax.Params  # S + (3,)
    rms: optax.Params  # S + (1,)
    factored: optax.Params  # a `Factored` per tensor
    step: jax.Array


def features(factored: bool, g, p, m, rms, row, col, fa, fb) -> list[jax.Array]:
    """The 28 per-parameter feature channels of a tensor or a block of its rows; `row`,
    `col`, `fa`, `fb` come from `FactoredStep` and may be broadcast."""
    c = adafactor_channels(factored, g, m, rms, row, col, fa, fb, diag_eps=1e-6)
    out = [g, p, *c.m, c.rms, *(x * c.r for x in c.m), c.r, *c.g_fac, *c.row, *c.col]
    return out + c.inv_roots + c.m_fac


@dataclasses.dataclass(frozen=True)
class AdafacMLPLOpt:
    """A per-parameter MLP learned optimizer with factored second-moment features."""

    hidden: int = 4
    layers: int = 2
    step_mult: float = 1e-3
    exp_mult: float = 1e-3
    name: str = "adafac_mlp_lopt"

    def init(self, key: jax.Array) -> Theta:
        sizes = [NUM_FEATURES + len(TIMESCALES)] + [self.hidden] * self.layers + [2]
        keys = jax.random.split(key, len(sizes) - 1)
        nn = {}
        for i, (k, a, b) in enumerate(zip(keys, sizes[:-1], sizes[1:], strict=True)):
            nn[f"w{i}"] = jax.random.truncated_normal(k, -2, 2, (a, b)) / jnp.sqrt(a)
            nn[f"b{i}"] = jnp.zeros(b)
        return {
            "momentum_decays": jnp.zeros(len(MOMENTUM_DECAYS)),
            "rms_decays": jnp.zeros(len(RMS_DECAYS)),
            "adafactor_decays": jnp.zeros(len(ADAFACTOR_DECAYS)),
            "nn": {"~": nn},
        }

    def optimizer(self, theta: Theta) -> optax.GradientTransformationExtraArgs:
        def init(params: optax.Params) -> AdafacState:
            return AdafacState(
                stat_zeros(params, len(MOMENTUM_DECAYS)),
                stat_zeros(params, len(RMS_DECAYS)),
                jax.tree_util.tree_map(
                    lambda p: factored_init(jnp.atleast_1d(p), len(ADAFACTOR_DECAYS)), params
                ),
                jnp.zeros((), jnp.int32),
            )

        def update(grads, state: AdafacState, params=None, **extra):
            del extra  # the loss is not a feature
            if params is None:
                raise ValueError("AdafacMLPLOpt needs the parameters: update(grads, state, params)")
            m_dec = decay(MOMENTUM_DECAYS, theta["momentum_decays"])
            r_dec = decay(RMS_DECAYS, theta["rms_decays"])
            f_dec = decay(ADAFACTOR_DECAYS, theta["adafactor_decays"])
            nn = theta["nn"]["~"]
            n_layers = len(nn) // 2
            t = state.step.astype(jnp.float32)
            time = jnp.tanh(t / jnp.asarray(TIMESCALES) - 1)
            # the time features are shared by every parameter: fold them into the first bias
            w0 = nn["w0"]
            b0 = time @ w0[NUM_FEATURES:] + nn["b0"]

            def one(param, g, m, r, fac):
                p, g = param.astype(STATE_DTYPE), g.astype(STATE_DTYPE)  # computed in float32
                m = ema(m, g, m_dec)
                r = ema(r, g * g, r_dec)
                p1, g1 = jnp.atleast_1d(p), jnp.atleast_1d(g)
                m1, r1 = m.reshape(p1.shape + m.shape[-1:]), r.reshape(p1.shape + r.shape[-1:])
                fstep = factored_update(fac, g1, f_dec)
                feats = functools.partial(features, fstep.factored)
                sources = (g1, p1, m1, r1, fstep.row, fstep.col, fstep.factor_a, fstep.factor_b)
                scale = channel_scales(feats, sources, p1.shape, 1e-5)
                layers = [(w0[:NUM_FEATURES] * scale[:, None], b0)]
                layers += [(nn[f"w{i}"], nn[f"b{i}"]) for i in range(1, n_layers)]
                d, mag = per_parameter_mlp(layers, feats, sources, p1.shape)
                step = d * jnp.exp(mag * self.exp_mult) * self.step_mult
                return update_like(step, param), m, r, fstep.state

            updates, momenta, rms, factored = map_tensors(
                one, params, grads, state.momenta, state.rms, state.factored
            )
            return updates, AdafacState(momenta, rms, factored, state.step + 1)

        # not jitted here: the caller's jit composes (see LearnedOptimizer)
        return optax.GradientTransformationExtraArgs(init, update)

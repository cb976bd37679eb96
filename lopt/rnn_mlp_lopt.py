"""RNNMLPLOpt: a per-tensor LSTM that gives context to a per-parameter MLP (Metz et al. 2020,
"Tasks, stability, architecture, and compute: training more effective learned optimizers, and
using them to train themselves", arXiv:2009.11243).

Each step, every tensor is summarized (magnitudes and spreads of its momenta, second moments and
values, norms, shape, the normalized training loss, and what its MLP and the LSTM said last
step); one LSTM step over these summaries (tensors as the batch) yields a context vector per
tensor for the MLP and a shared message for the next step. The MLP maps each parameter's
features and its tensor's context to a direction d, a log-magnitude a and a message back to the
LSTM; the update is -step_mult * d * exp(exp_mult * a). Gradients are clipped at ten times a
running average of their RMS. (The original also reads a validation loss; inner training here
has no validation stream, so that feature is left out.)
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metalearn.lopt.accumulators import ema
from metalearn.lopt.base import Theta
from metalearn.lopt.blocks import channel_scales, row_blocks, split
from metalearn.lopt.cells import lstm_cell
from metalearn.lopt.per_tensor import STATE_DTYPE, stat_zeros, tensors, update_like

DECAYS = (0.5, 0.9, 0.99, 0.999, 0.9999)
TIMESCALES = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1e3, 3e3, 1e4, 3e4, 1e5)
LOSS_DECAY = 0.9
CLIP_DECAY, CLIP_MULT = 0.99, 10.0
NUM_PARAM_FEATURES = 3 + 4 * len(DECAYS)  # g, p, log|p|, m, rms, m/sqrt(rms), 1/sqrt(rms)
NUM_TENSOR_STATS = 9 + 2 + 1 + 4 + 1  # moments' stats, norms, is_scalar, shape, loss


class RNNMLPLOptState(NamedTuple):
    momenta: optax.Params  # S + (5,)
    rms: optax.Params  # S + (5,)
    lstm_hidden: jax.Array  # [T, H]; theta's initial state at step 0
    lstm_cell: jax.Array
    from_mlp: jax.Array  # [T, from_mlp]: each tensor's MLP message to the LSTM
    from_lstm: jax.Array  # [from_lstm]: the LSTM's message to itself
    loss_mean: jax.Array  # running mean / variance of the training loss
    loss_var: jax.Array
    clip_value: jax.Array  # running RMS of the clipped gradients
    step: jax.Array


def _log_clip(x: jax.Array) -> jax.Array:
    return jnp.clip(jnp.log(1e-8 + jnp.abs(x)), -5, 5)


def _tensor_stats(p, g, m, rms, loss_feat) -> jax.Array:
    """[NUM_TENSOR_STATS] summary of one tensor."""
    stats = []
    for x in (m, rms, p):
        mean = jnp.mean(x)
        stats += [_log_clip(mean), jnp.sign(mean), _log_clip(jnp.mean((x - mean) ** 2))]
    shape = list(p.shape[:4]) + [1] * (4 - min(p.ndim, 4))
    stats += [_log_clip(jnp.linalg.norm(p)), _log_clip(jnp.linalg.norm(g))]
    stats += [1.0 if p.ndim == 0 else -1.0]
    stats += list(np.log(np.asarray(shape, np.float32)) - 1)
    stats += [loss_feat]
    return jnp.stack([jnp.asarray(s, jnp.float32) for s in stats])


@dataclasses.dataclass(frozen=True)
class RNNMLPLOpt:
    """Per-tensor LSTM context for a per-parameter MLP learned optimizer."""

    hidden: int = 32
    layers: int = 2
    lstm_hidden: int = 64
    from_mlp: int = 16
    from_lstm: int = 18
    lstm_to_ff: int = 17
    step_mult: float = 1e-3
    exp_mult: float = 1e-3
    name: str = "rnn_mlp_lopt"

    @property
    def lstm_inputs(self) -> int:
        return NUM_TENSOR_STATS + self.from_mlp + self.from_lstm

    @property
    def mlp_inputs(self) -> int:
        return NUM_PARAM_FEATURES + len(TIMESCALES) + 3 + self.lstm_to_ff

    def init(self, key: jax.Array) -> Theta:
        H = self.lstm_hidden
        keys = iter(jax.random.split(key, 16))

        def linear(a, b):
            w = jax.random.truncated_normal(next(keys), -2, 2, (a, b)) / np.sqrt(a)
            return {"w": w, "b": jnp.zeros(b)}

        sizes = [self.mlp_inputs] + [self.hidden] * self.layers + [2 + self.from_mlp]
        return {
            "initial_from_lstm": jax.random.normal(next(keys), (self.from_lstm,)) * 0.1,
            "initial_from_mlp": jax.random.normal(next(keys), (self.from_mlp,)) * 0.1,
            "lstm_init_state": {"hidden": jnp.zeros((1, H)), "cell": jnp.zeros((1, H))},
            "rnn": linear(self.lstm_inputs + H, 4 * H),
            "rnn_to_ff": linear(H, self.lstm_to_ff),
            "rnn_to_in": linear(H, self.from_lstm),
            "mlp": [linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True)],
        }

    def _mlp_step(self, mlp, w0, bias, g, p, m, r) -> tuple[jax.Array, jax.Array]:
        """Steps [N] of one flattened tensor and the sum of its MLP's messages, a cache-sized
        block of parameters at a time."""
        n = g.shape[0]
        m, r = m.reshape(n, -1), r.reshape(n, -1)

        def features(g, p, m, r):
            inv = jax.lax.rsqrt(r + 1e-6)
            m, r, inv = split(m), split(r), split(inv)
            mi = [a * b for a, b in zip(m, inv, strict=True)]
            return [g, p, jnp.log(jnp.abs(p) + 1e-8), *m, *r, *mi, *inv]

        scale = channel_scales(features, (g, p, m, r), (n,), 1e-5)

        def block(g, p, m, r, valid):
            x = jnp.stack(features(g, p, m, r), -1) * scale[None]
            out = x @ w0[:NUM_PARAM_FEATURES] + bias[None]
            for layer in mlp[1:]:
                out = jax.nn.relu(out) @ layer["w"] + layer["b"][None]
            step = out[:, 0] * jnp.exp(out[:, 1] * self.exp_mult) * self.step_mult
            return step, jnp.sum(out[:, 2:] * valid[:, None], 0)  # padding rows masked out

        return row_blocks(block, (g, p, m, r, jnp.ones(n)), (n,))

    def optimizer(self, theta: Theta) -> optax.GradientTransformationExtraArgs:
        decays = jnp.asarray(DECAYS)
        H = self.lstm_hidden

        def init(params: optax.Params) -> RNNMLPLOptState:
            T = len(jax.tree_util.tree_leaves(params))
            zeros = stat_zeros(params, len(DECAYS))
            zero = jnp.zeros((), STATE_DTYPE)
            return RNNMLPLOptState(
                zeros,
                zeros,
                jnp.zeros((T, H), STATE_DTYPE),
                jnp.zeros((T, H), STATE_DTYPE),
                jnp.zeros((T, self.from_mlp), STATE_DTYPE),
                jnp.zeros(self.from_lstm, STATE_DTYPE),
                zero,
                zero,
                jnp.asarray(0.01, STATE_DTYPE),
                jnp.zeros((), jnp.int32),
            )

        def update(grads, state: RNNMLPLOptState, params=None, *, loss=None, **extra):
            del extra
            if params is None or loss is None:
                raise ValueError(
                    "RNNMLPLOpt needs the parameters and the loss: update(g, s, p, loss=L)"
                )
            first = state.step == 0  # initial LSTM state and messages are meta-parameters
            t = state.step.astype(jnp.float32)
            tree, per_tensor = tensors(params, grads, state.momenta, state.rms)
            params_in = [p for p, *_ in per_tensor]
            ps = [p.astype(STATE_DTYPE) for p in params_in]  # computed in float32
            T = len(ps)

            # the loss, normalized by its running mean and spread
            loss = jnp.asarray(loss, jnp.float32)
            mean = LOSS_DECAY * state.loss_mean + (1 - LOSS_DECAY) * loss
            var = LOSS_DECAY * state.loss_var + (1 - LOSS_DECAY) * (mean - loss) ** 2
            c = 1 / (1 - LOSS_DECAY ** (t + 1) + 1e-8)
            loss_feat = jnp.clip((loss - c * mean) * jax.lax.rsqrt(c * var + 1e-8), -5, 5)

            # clip gradients at ten times their (bias-corrected) running RMS
            limit = state.clip_value / (1 - CLIP_DECAY ** (t + 1)) * CLIP_MULT
            gs = [jnp.clip(g.astype(STATE_DTYPE), -limit, limit) for _, g, _, _ in per_tensor]
            sq = jnp.mean(jnp.stack([jnp.mean(g * g) for g in gs]))
            clip_value = CLIP_DECAY * state.clip_value + (1 - CLIP_DECAY) * jnp.sqrt(1e-8 + sq)

            ms = [ema(m, g, decays) for (_, _, m, _), g in zip(per_tensor, gs, strict=True)]
            rs = [ema(r, g * g, decays) for (_, _, _, r), g in zip(per_tensor, gs, strict=True)]

            from_mlp = jnp.where(first, theta["initial_from_mlp"], state.from_mlp)
            from_lstm = jnp.where(first, theta["initial_from_lstm"], state.from_lstm)
            stats = jnp.stack(
                [
                    _tensor_stats(p, g, m, r, loss_feat)
                    for p, g, m, r in zip(ps, gs, ms, rs, strict=True)
                ]
            )
            x_TI = jnp.concatenate(
                [
                    stats,
                    jnp.broadcast_to(from_mlp, (T, self.from_mlp)),
                    jnp.tile(from_lstm, (T, 1)),
                ],
                -1,
            )
            h0 = jnp.where(first, theta["lstm_init_state"]["hidden"], state.lstm_hidden)
            c0 = jnp.where(first, theta["lstm_init_state"]["cell"], state.lstm_cell)
            h, cell = lstm_cell(theta["rnn"], x_TI, h0, c0)
            next_from_lstm = jnp.mean(
                h @ theta["rnn_to_in"]["w"] + theta["rnn_to_in"]["b"][None], 0
            )
            ff_in_TF = h @ theta["rnn_to_ff"]["w"] + theta["rnn_to_ff"]["b"][None]

            mlp = theta["mlp"]
            w0 = mlp[0]["w"]
            time = jnp.sin(t / (jnp.asarray(TIMESCALES) * np.pi))
            updates, messages = [], []
            for k, (param, p, g, m, r) in enumerate(zip(params_in, ps, gs, ms, rs, strict=True)):
                n = max(p.size, 1)
                # what is shared by the tensor's parameters enters the first layer as a bias
                sizes = jnp.stack(
                    [np.log(T) - 1, jnp.log(jnp.linalg.norm(p) + 1e-8), np.log(n)]
                ).astype(jnp.float32)
                shared = jnp.concatenate([time, sizes, ff_in_TF[k]])
                bias = shared @ w0[NUM_PARAM_FEATURES:] + mlp[0]["b"]
                step, total = self._mlp_step(mlp, w0, bias, g.reshape(n), p.reshape(n), m, r)
                updates.append(update_like(step, param))
                messages.append(total / n)
            unflat = tree.unflatten
            return unflat(updates), RNNMLPLOptState(
                unflat(ms),
                unflat(rs),
                h,
                cell,
                jnp.stack(messages),
                next_from_lstm,
                mean,
                var,
                clip_value,
                state.step + 1,
            )

        # not jitted here: the caller's jit composes (see LearnedOptimizer)
        return optax.GradientTransformationExtraArgs(init, update)

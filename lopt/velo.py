"""VeLO: the hierarchical learned optimizer of Metz et al. 2022 ("VeLO: Training Versatile
Learned Optimizers by Scaling Up", arXiv:2211.09760).

A per-tensor LSTM reads tensor-level statistics, the training progress and loss features, and
emits (a) `controls` that mix a bank of `param_inits` tiny per-parameter MLPs into one MLP for that
tensor and (b) a learning-rate multiplier. The mixed MLP maps per-parameter features (gradient,
momenta, Adafactor statistics) to a direction d and log-magnitude a; the step is
lr_mult * d * exp(a * exp_mult) * rms(p) * step_mult.

The meta-parameters use learned_optimization's layout and names (`HyperV2` in
research/general_lopt/hyper_v2.py), so `lopt.velo_weights.load_velo` reads the released weights.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metalearn.core.errors import UserError
from metalearn.lopt.accumulators import adafactor_channels, ema, factored_init, factored_update
from metalearn.lopt.base import Theta
from metalearn.lopt.blocks import block_sums, per_parameter_mlp, split
from metalearn.lopt.cells import lstm_cell
from metalearn.lopt.per_tensor import STATE_DTYPE, stat_zeros, tensors, update_like

MOMENTUM_DECAYS = (0.9, 0.99, 0.999)
RMS_DECAYS = (0.999,)
ADAFACTOR_DECAYS = (0.9, 0.99, 0.999)
FRACTIONS = (0.03, 0.1, 0.2, 0.4, 0.6, 0.8, 0.9, 1.0, 1.1)  # training-progress thresholds
NUM_LOSS = 10  # loss averages at half-lives from 10 steps to num_steps
# channels of the 14 per-parameter feature groups (see `_ff_features`)
GROUPS = (1, 1, 1, 3, 1, 3, 1, 3, 1, 3, 3, 3, 3, 3)
LSTM_FEATURES = len(FRACTIONS) + (NUM_LOSS - 1) + 1 + 5 + 3 + 3  # 30
GRAD_CLIP = 1000.0


class LossBuffer(NamedTuple):
    means: jax.Array  # [NUM_LOSS] running means of the (clipped) loss
    running_min: jax.Array  # [NUM_LOSS] smallest bias-corrected mean so far
    iteration: jax.Array


class VeLOState(NamedTuple):
    momenta: optax.Params  # S + (3,)
    rms: optax.Params  # S + (1,)
    factored: optax.Params  # a `lopt.accumulators.Factored` per tensor
    lstm_hidden: jax.Array  # [T, H]; replaced by theta's initial state at step 0
    lstm_cell: jax.Array
    loss: LossBuffer
    iteration: jax.Array


def _loss_decays(num_steps: int) -> jax.Array:
    halflife = np.logspace(1.0, np.log10(num_steps), NUM_LOSS)
    return jnp.asarray(np.exp(-1.0 / halflife), jnp.float32)


def _loss_update(buf: LossBuffer, loss: jax.Array, decays: jax.Array) -> LossBuffer:
    """Outlier losses (more than twice the largest average) are clipped before averaging."""
    k = buf.iteration.astype(jnp.float32)
    corrected = buf.means / (1 - decays ** (k + 1))
    cap = jnp.where(buf.iteration == 0, loss, jnp.max(corrected))
    loss = jnp.minimum(2 * jnp.abs(cap), loss)
    means = decays * buf.means + (1 - decays) * loss
    running_min = jnp.minimum(buf.running_min, means / (1 - decays ** (k + 1)))
    return LossBuffer(means, running_min, buf.iteration + 1)


def _loss_features(buf: LossBuffer, decays: jax.Array) -> jax.Array:
    """[NUM_LOSS - 1]: how far each average sits above its running minimum, relative to the
    next slower average; zero for the first two steps."""
    corrected = buf.means / (1 - decays ** buf.iteration.astype(jnp.float32))
    low = buf.running_min[:-1]
    rel = (corrected[:-1] - low) / jnp.maximum(1e-8, corrected[1:] - low) - 1
    return jnp.where(buf.iteration <= 2, 0.0, jnp.clip(rel, -1, 1))


def _clipped_log(x: jax.Array) -> jax.Array:
    return 0.5 * jnp.clip(jnp.log(1e-8 + jnp.abs(10 * x)), -5, 5)


def _moment_terms(p, m, rms) -> list[jax.Array]:
    """What the LSTM's tensor statistics are summed from: p^2, the momenta and their squares,
    the second moment and its square (all before this step)."""
    ms, r = split(m), rms[..., 0]
    return [p * p, *ms, *(x * x for x in ms), r, r * r]


NUM_MOMENT_TERMS = 3 + 2 * len(MOMENTUM_DECAYS)


def _lstm_features_from(
    sums: jax.Array, shape: tuple[int, ...], progress: jax.Array, loss_feats: jax.Array
) -> jax.Array:
    """The [30] statistics of one tensor of `shape` the LSTM reads, from the sums of
    `_moment_terms`. Statistics are taken relative to the tensor's own scale; spreads come from
    sums of squares, so one pass over the tensor gives them all."""
    n = max(1, int(np.prod(shape)))
    k = len(MOMENTUM_DECAYS)
    mean_p2, m1, m2 = sums[0] / n, sums[1 : 1 + k] / n, sums[1 + k : 1 + 2 * k] / n
    r1, r2 = sums[1 + 2 * k] / n, sums[2 + 2 * k] / n
    s = jax.lax.rsqrt(jnp.maximum(1e-9, mean_p2))
    m_mean = s * m1
    rank = sum(int(d > 1) for d in shape)
    return jnp.concatenate(
        [
            jnp.tanh(10 * (progress - jnp.asarray(FRACTIONS))),
            loss_feats,
            _clipped_log(s * r1)[None],
            jax.nn.one_hot(rank, 5) if rank < 5 else jnp.zeros(5),
            _clipped_log(jnp.maximum(0.0, s * s * m2 - m_mean**2)),
            # centred on the momentum mean, as in the released optimizer (3 values, not 1)
            _clipped_log(jnp.maximum(0.0, s * s * r2 - 2 * s * r1 * m_mean + m_mean**2)),
        ]
    )


def _lstm_features(p, m, rms, progress: jax.Array, loss_feats: jax.Array) -> jax.Array:
    """`_lstm_features_from` for a whole tensor p with momenta m [..., 3] and rms [..., 1]."""
    sums = jnp.stack([jnp.sum(x) for x in _moment_terms(p, m, rms)])
    return _lstm_features_from(sums, p.shape, progress, loss_feats)


def _linear(w: Theta, x: jax.Array) -> jax.Array:
    y = x @ w["w"]
    return y + jnp.broadcast_to(w["b"], y.shape)


def _ff_features(factored: bool, p, g, m, rms, row, col, fa, fb) -> list[jax.Array]:
    """The 30 per-parameter feature channels (14 groups, see GROUPS) of a tensor or a block of
    its rows (moments after this step; `row`, `col`, `fa`, `fb` from `FactoredStep`, maybe
    broadcast). Unfactored tensors: the diagonal estimate with no epsilon, as released."""
    c = adafactor_channels(factored, g, m, rms, row, col, fa, fb, diag_eps=0.0)
    out = [g, jnp.clip(g, -0.1, 0.1), p, *c.m, c.rms, *(x * c.r for x in c.m), c.r]
    out += [*c.g_fac, g * c.r, *c.row, *c.col]
    return out + c.inv_roots + c.m_fac


@dataclasses.dataclass(frozen=True)
class VeLO:
    """VeLO for a training run of `num_steps` steps (its progress features need the length).

    The released optimizer is `VeLO(num_steps=N)` with the weights from
    `lopt.velo_weights.load_velo`. `bugged_loss_features=True` reproduces the older checkpoints
    whose loss averages ignored num_steps.
    """

    num_steps: int = 1000
    lstm_hidden: int = 512
    param_inits: int = 256
    ff_hidden: int = 4
    step_mult: float = 1e-3
    exp_mult: float = 1e-3
    bugged_loss_features: bool = False
    name: str = "velo"

    def __post_init__(self) -> None:
        if self.num_steps < 1:
            raise UserError(f"VeLO num_steps must be a positive int, got {self.num_steps}")

    def init(self, key: jax.Array) -> Theta:
        """Fresh meta-parameters (truncated-normal weights with std 1/sqrt(fan_in), zero
        biases), laid out as learned_optimization's HyperV2 lays them out."""
        H, P, F = self.lstm_hidden, self.param_inits, self.ff_hidden
        keys = iter(jax.random.split(key, 32))

        def dense(fan_in, fan_out, lead=()):
            w = jax.random.truncated_normal(next(keys), -2, 2, lead + (fan_in, fan_out))
            return w / np.sqrt(fan_in), jnp.zeros(lead + (fan_out,))

        def linear(fan_in, fan_out):
            w, b = dense(fan_in, fan_out)
            return {"w": w, "b": b}

        ff = {}
        for i, c in enumerate(GROUPS):
            # one first layer split by group; its fan-in is the whole input
            w = jax.random.truncated_normal(next(keys), -2, 2, (P, c, F))
            ff[f"w0__{i}"] = w / np.sqrt(sum(GROUPS))
        ff["b0"] = jnp.zeros((P, F))
        ff["w1"], ff["b1"] = dense(F, F, (P,))
        ff["w2"], ff["b2"] = dense(F, 3, (P,))
        return {
            "lstm_init_state": {"hidden": jnp.zeros((1, H)), "cell": jnp.zeros((1, H))},
            "rnn_params": {
                "linear": linear(LSTM_FEATURES, H),  # unused by the update; kept for the layout
                "linear_1": linear(LSTM_FEATURES, H),
                "linear_2": linear(LSTM_FEATURES, H),
                "rnn/linear": linear(2 * H, 4 * H),
                "rnn_to_controls": linear(H, P),
                "step_size": linear(H, 1),
            },
            "ff_mod_stack": {"~": ff},
        }

    def _ff_step(self, sources, factored: bool, sums, w: Theta, lr_scale: jax.Array):
        """The step of one tensor (rank >= 1) from its mixed per-parameter MLP `w`, given the
        sums of squares of its feature channels."""
        p = sources[0]
        scale = jax.lax.rsqrt(1e-5 + sums / max(p.size, 1))
        w0 = jnp.concatenate([w[f"w0__{i}"] for i in range(len(GROUPS))], 0)
        layers = [(w0 * scale[:, None], w["b0"]), (w["w1"], w["b1"]), (w["w2"], w["b2"])]
        feats = functools.partial(_ff_features, factored)
        d, mag, _ = per_parameter_mlp(layers, feats, sources, p.shape)
        return lr_scale * d * jnp.exp(mag * self.exp_mult)

    def optimizer(self, theta: Theta) -> optax.GradientTransformationExtraArgs:
        m_decays = jnp.asarray(MOMENTUM_DECAYS)
        r_decays = jnp.asarray(RMS_DECAYS)
        f_decays = jnp.asarray(ADAFACTOR_DECAYS)
        loss_decays = _loss_decays(10 if self.bugged_loss_features else self.num_steps)
        H = self.lstm_hidden

        def init(params: optax.Params) -> VeLOState:
            hidden = jnp.zeros((len(jax.tree_util.tree_leaves(params)), H), STATE_DTYPE)
            return VeLOState(
                stat_zeros(params, len(MOMENTUM_DECAYS)),
                stat_zeros(params, len(RMS_DECAYS)),
                jax.tree_util.tree_map(
                    lambda p: factored_init(jnp.atleast_1d(p), len(ADAFACTOR_DECAYS)), params
                ),
                hidden,
                hidden,
                LossBuffer(
                    jnp.zeros(NUM_LOSS, STATE_DTYPE),
                    jnp.full(NUM_LOSS, 999999999999.0, STATE_DTYPE),
                    jnp.zeros((), jnp.int32),
                ),
                jnp.zeros((), jnp.int32),
            )

        def update(grads, state: VeLOState, params=None, *, loss=None, **extra):
            del extra
            if params is None or loss is None:
                raise ValueError("VeLO needs the parameters and the loss: update(g, s, p, loss=L)")
            buf = _loss_update(state.loss, jnp.asarray(loss, jnp.float32), loss_decays)
            loss_feats = _loss_features(buf, loss_decays)
            progress = state.iteration.astype(jnp.float32) / self.num_steps
            tree, per_tensor = tensors(params, grads, state.momenta, state.rms, state.factored)
            ps = [p for p, *_ in per_tensor]

            def advance(g, m, r):  # the moments after this step
                return ema(m, g, m_decays), ema(r, g * g, r_decays)

            # one pass over every tensor sums both what the LSTM reads (moments before this
            # step) and the squares of the MLP's feature channels (moments after it)
            prepared = []
            for p, g, m, r, fac in per_tensor:
                # computed in float32, whatever the parameters' dtype
                g = jnp.clip(g.astype(STATE_DTYPE), -GRAD_CLIP, GRAD_CLIP)
                p1, g1 = jnp.atleast_1d(p.astype(STATE_DTYPE)), jnp.atleast_1d(g)
                m1, r1 = m.reshape(p1.shape + m.shape[-1:]), r.reshape(p1.shape + r.shape[-1:])
                fstep = factored_update(fac, g1, f_decays)
                extra_sources = (fstep.row, fstep.col, fstep.factor_a, fstep.factor_b)

                def terms(p, g, m, r, *rest, factored=fstep.factored):
                    feats = _ff_features(factored, p, g, *advance(g, m, r), *rest)
                    return _moment_terms(p, m, r) + [x * x for x in feats]

                sums = block_sums(terms, (p1, g1, m1, r1, *extra_sources), p1.shape)
                prepared.append((p1, g1, m1, r1, fstep, extra_sources, sums))
            x_TI = jnp.stack(
                [
                    _lstm_features_from(t[-1][:NUM_MOMENT_TERMS], p.shape, progress, loss_feats)
                    for p, t in zip(ps, prepared, strict=True)
                ]
            )

            rnn = theta["rnn_params"]
            pooled = jnp.max(jax.nn.relu(_linear(rnn["linear_1"], x_TI)), 0, keepdims=True)
            first = state.iteration == 0  # the initial LSTM state is a meta-parameter
            init_state = theta["lstm_init_state"]
            h0 = jnp.where(first, init_state["hidden"], state.lstm_hidden)
            c0 = jnp.where(first, init_state["cell"], state.lstm_cell)
            h, c = lstm_cell(rnn["rnn/linear"], _linear(rnn["linear_2"], x_TI) + pooled, h0, c0)
            controls_TP = _linear(rnn["rnn_to_controls"], h)
            lr_mult_T = _linear(rnn["step_size"], h)[:, 0]

            bank = theta["ff_mod_stack"]["~"]
            P = controls_TP.shape[-1]
            updates, momenta, rms, factored = [], [], [], []
            for t, (p, (p1, g1, m1, r1, fstep, extra_sources, sums)) in enumerate(
                zip(ps, prepared, strict=True)
            ):
                m1, r1 = advance(g1, m1, r1)
                # the tensor's MLP: 100 x the control-weighted mean of the bank
                mixed = jax.tree_util.tree_map(
                    lambda w: 100.0 / P * jnp.tensordot(controls_TP[t], w, 1),  # noqa: B023
                    bank,
                )
                mean_p2 = sums[0] / p1.size
                lr_scale = lr_mult_T[t] * jnp.sqrt(mean_p2 + 1e-9) * self.step_mult
                sources = (p1, g1, m1, r1, *extra_sources)
                step = self._ff_step(
                    sources, fstep.factored, sums[NUM_MOMENT_TERMS:], mixed, lr_scale
                )
                updates.append(update_like(step, p))
                momenta.append(m1.reshape(p.shape + m1.shape[-1:]))
                rms.append(r1.reshape(p.shape + r1.shape[-1:]))
                factored.append(fstep.state)
            unflat = tree.unflatten
            return unflat(updates), VeLOState(
                unflat(momenta),
                unflat(rms),
                unflat(factored),
                h,
                c,
                buf,
                state.iteration + 1,
            )

        # not jitted here: the caller's jit composes (see LearnedOptimizer)
        return optax.GradientTransformationExtraArgs(init, update)

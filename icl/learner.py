"""In-context learners: a sequence model plus the loss that meta-trains it and the predictor
that evaluates it. theta is a plain nested dict of arrays (the model's `nnx` state)."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Literal

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from metalearn.core.errors import UserError
from metalearn.data.base import Batch, TaskFamily
from metalearn.icl.fast_weights import FastWeights
from metalearn.icl.local import LocalTransformer, pipelined_value_and_grad
from metalearn.icl.lstm import LSTM
from metalearn.icl.tokens import token_size, tokens
from metalearn.icl.transformer import Transformer
from metalearn.meta.evaluate import Predictions
from metalearn.meta.local_updates import local_objective, stage_mesh
from metalearn.meta.objective import Estimate, Estimator
from metalearn.meta.precision import DTYPES

Theta = dict[str, Any]


KINDS = ("transformer", "lstm", "fast_weights")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture of an in-context learner (`heads`: transformers and fast weights;
    `mlp_ratio`: both; `shift`, the token shift of icl/transformer.py: every kind).

    `local_blocks` > 1 trains a transformer by local updates (icl/local.py, Laskin et al.
    2020): its layers in that many stages, each with its own readout and loss, no gradient
    across stages; `local_overlap` layers of each stage are also trained by the next one's loss.
    `remat` (transformers) recomputes each layer's activations in the backward pass
    (`jax.checkpoint`): less memory, about one more forward pass of compute.
    `matmul_dtype="bfloat16"` (transformers) multiplies in the layers' dense products in
    bfloat16 with float32 accumulation (`meta.precision`); parameters stay float32.
    """

    kind: Literal["transformer", "lstm", "fast_weights"] = "transformer"
    depth: int = 4
    width: int = 64
    heads: int = 2
    mlp_ratio: int = 4
    shift: bool = True
    local_blocks: int = 1
    local_overlap: int = 0
    remat: bool = False
    matmul_dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise UserError(f"model.kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        for name in ("depth", "width", "heads", "mlp_ratio", "local_blocks"):
            if getattr(self, name) < 1:
                raise UserError(f"model.{name} must be a positive int, got {getattr(self, name)}")
        if self.matmul_dtype not in DTYPES:
            raise UserError(
                f"model.matmul_dtype must be one of {', '.join(DTYPES)}, got {self.matmul_dtype!r}"
            )
        if self.matmul_dtype != "float32" and self.kind != "transformer":
            raise UserError(f"model.matmul_dtype needs model.kind transformer, got {self.kind!r}")
        if self.remat and self.kind != "transformer":
            raise UserError(f"model.remat needs model.kind transformer, got {self.kind!r}")
        if self.local_blocks > 1 and self.kind != "transformer":
            raise UserError(
                f"model.local_blocks > 1 needs model.kind transformer, got {self.kind!r}"
            )
        if self.depth % self.local_blocks:
            raise UserError(
                f"model.local_blocks ({self.local_blocks}) must divide model.depth ({self.depth})"
            )
        per = self.depth // self.local_blocks
        if self.local_overlap and (self.local_blocks == 1 or not 0 <= self.local_overlap <= per):
            raise UserError(
                f"model.local_overlap must be in [0, {per}] (layers per local block) with "
                f"model.local_blocks > 1, got {self.local_overlap}"
            )
        if self.kind != "lstm" and self.width % self.heads:
            raise UserError(
                f"model.width ({self.width}) must be divisible by model.heads ({self.heads})"
            )

    def state_size(self, length: int) -> int:
        """Numbers the model carries from one token to the next after `length` tokens (GPICL
        Sec. 5's state size): a transformer's keys and values of every past token in every
        layer, an LSTM's h and c, the fast weights' matrix memories."""
        if self.kind == "transformer":
            return 2 * self.depth * length * self.width
        if self.kind == "lstm":
            return 2 * self.depth * self.width
        return self.depth * self.width * self.width // self.heads

    def build(self, token_dim: int, out_size: int, max_length: int, rngs: nnx.Rngs) -> nnx.Module:
        sizes = dict(depth=self.depth, width=self.width, shift=self.shift, rngs=rngs)
        if self.kind == "lstm":
            return LSTM(token_dim, out_size, max_length, **sizes)
        blocks = dict(heads=self.heads, mlp_ratio=self.mlp_ratio)
        if self.kind == "fast_weights":
            return FastWeights(token_dim, out_size, max_length, **sizes, **blocks)
        precision = dict(remat=self.remat, matmul_dtype=self.matmul_dtype)
        if self.local_blocks > 1:
            return LocalTransformer(
                token_dim,
                out_size,
                max_length,
                **sizes,
                **blocks,
                blocks=self.local_blocks,
                overlap=self.local_overlap,
                **precision,
            )
        return Transformer(token_dim, out_size, max_length, **sizes, **blocks, **precision)


@dataclasses.dataclass(frozen=True)
class InContextLearner:
    """Reads (x_1, y_1, ..., x_t) and predicts y_t at every position t of a sequence."""

    model: ModelConfig
    input_dim: int
    num_classes: int | None  # None: regression
    max_length: int

    @classmethod
    def for_family(
        cls, model: ModelConfig, family: TaskFamily, max_length: int
    ) -> InContextLearner:
        return cls(model, family.input_dim, family.num_classes, max_length)

    def _module(self, key: jax.Array) -> nnx.Module:
        out = 1 if self.num_classes is None else self.num_classes
        tok = token_size(self.input_dim, self.num_classes)
        return self.model.build(tok, out, self.max_length, nnx.Rngs(params=key))

    @functools.cached_property
    def graphdef(self) -> nnx.GraphDef:
        return nnx.split(nnx.eval_shape(lambda: self._module(jax.random.key(0))))[0]

    def init(self, key: jax.Array) -> Theta:
        """Fresh meta-parameters."""
        return nnx.to_pure_dict(nnx.state(self._module(key)))

    def num_params(self, theta: Theta) -> int:
        return sum(x.size for x in jax.tree_util.tree_leaves(theta))

    def step_flops(self, theta: Theta, batch_size: int) -> float:
        """Training FLOPs of one meta-training step on `batch_size` sequences of max_length
        (one token per example; attention only in transformers)."""
        depth = self.model.depth if self.model.kind == "transformer" else 0
        params = self.num_params(theta)
        if self.model.local_overlap:
            # each of the stages after the first recomputes (and trains) `local_overlap` layers
            again = self.model.local_overlap * (self.model.local_blocks - 1)
            params += again * self.num_params(theta["stages"][0]["blocks"][0])
            depth += again
        per_seq = sequence_flops(params, depth, self.max_length, self.model.width)
        return float(batch_size * per_seq)

    def apply(self, theta: Theta, x_NLD: jax.Array, y_NL: jax.Array) -> jax.Array:
        """Outputs at every position: logits [N, L, C], or predictions [N, L] for regression."""
        return self.squeeze(nnx.merge(self.graphdef, theta)(tokens(x_NLD, y_NL, self.num_classes)))

    def loss(
        self, theta: Theta, batch: Batch, weighting: str = "uniform"
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Loss over every position (GPICL trains on all of them) and a metric.

        weighting="log" (regression) minimizes the mean over positions of log(MSE at that
        position): each position's gradient is scaled by 1/its error, so late positions, whose
        error is small but matters as much relatively, are not drowned out by early ones. The
        minimizer is unchanged: the best predictor minimizes every position's error.
        """
        if self.model.local_blocks > 1:
            module = nnx.merge(self.graphdef, theta)
            outs = module.local_outputs(tokens(batch.x, batch.y, self.num_classes))
            pairs = [self.output_loss(self.squeeze(o), batch.y, weighting) for o in outs]
            metrics = dict(pairs[-1][1])
            metrics.update({f"block{k}_loss": m["loss"] for k, (_, m) in enumerate(pairs)})
            return local_objective([p[0] for p in pairs]), metrics
        return self.output_loss(self.apply(theta, batch.x, batch.y), batch.y, weighting)

    def squeeze(self, out: jax.Array) -> jax.Array:
        """Outputs [N, L, 1] of a regression model as [N, L]; logits unchanged."""
        return out[..., 0] if self.num_classes is None else out

    def output_loss(
        self, out: jax.Array, y_NL: jax.Array, weighting: str = "uniform"
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """The loss of outputs `out` (as `apply` gives them) against labels `y_NL`."""
        if self.num_classes is None:
            per_pos = jnp.mean((out - y_NL) ** 2, axis=0)
            err = jnp.mean(per_pos)
            if weighting == "log":
                return jnp.mean(jnp.log(per_pos)), {"loss": err, "mse": err}
            return err, {"loss": err, "mse": err}
        ce = optax.softmax_cross_entropy_with_integer_labels(out, y_NL).mean()
        acc = jnp.mean(jnp.argmax(out, -1) == y_NL)
        return ce, {"loss": ce, "accuracy": acc}


@dataclasses.dataclass(frozen=True)
class SequenceObjective:
    """The meta-objective of an in-context learner on a task family (see `meta.Objective`)."""

    learner: InContextLearner
    family: TaskFamily
    batch_size: int
    length: int
    weighting: str = "uniform"

    def init(self, key: jax.Array) -> Theta:
        return self.learner.init(key)

    def sample(self, key: jax.Array, step: jax.Array) -> Batch:
        del step  # no curriculum: every step draws from the same distribution
        return self.family.sample(key, self.batch_size, self.length)

    def loss(self, theta: Theta, batch: Batch) -> tuple[jax.Array, dict[str, jax.Array]]:
        return self.learner.loss(theta, batch, self.weighting)


def pipelined_local(objective: SequenceObjective, microbatches: int) -> Estimator:
    """Local updates with stage k of the objective's model on device k, `microbatches`
    pipelined through the stages (`icl.local.pipelined_value_and_grad`): the same gradient as
    `backprop(objective)` for the same model, to float rounding. With R x K devices for K
    stages, R pipelines each take a share of every microbatch (data parallelism beside it)."""
    learner = objective.learner
    model = learner.model
    stages = model.local_blocks
    if stages < 2 or model.local_overlap:
        raise UserError(
            "a pipelined step needs model.local_blocks >= 2 and model.local_overlap 0, got "
            f"{stages} and {model.local_overlap}"
        )
    devices = jax.device_count()
    if devices % stages:
        raise UserError(
            f"model.local_blocks={stages} pipelined stages need one device each (or a "
            f"multiple of {stages} devices, for data parallelism beside them); this job has "
            f"{devices} (on CPU, simulate them with XLA_FLAGS="
            f"--xla_force_host_platform_device_count={stages})"
        )
    replicas = devices // stages
    if microbatches < 1 or objective.batch_size % (microbatches * replicas):
        raise UserError(
            f"pipeline microbatches x {replicas} replicas must divide batch_size "
            f"{objective.batch_size}, got {microbatches} microbatches"
        )
    if objective.weighting != "uniform":
        raise UserError("a pipelined step needs weighting=uniform (a mean over microbatches)")

    def init(key: jax.Array, theta: Theta) -> tuple[()]:
        del key, theta
        return ()

    def estimate(theta: Theta, state, key: jax.Array, step: jax.Array) -> Estimate:
        batch = objective.sample(key, step)
        # the loop's device mesh (every device of the job, one axis) holds the stages
        mesh = jax.sharding.get_abstract_mesh()
        if mesh.empty:
            mesh = stage_mesh(stages, replicas)
        (axis,) = mesh.axis_names
        loss, grad, metrics = pipelined_value_and_grad(
            nnx.merge(learner.graphdef, theta),
            lambda out, y: learner.output_loss(learner.squeeze(out), y),
            theta,
            tokens(batch.x, batch.y, learner.num_classes),
            batch.y,
            mesh=mesh,
            microbatches=microbatches,
            axis=axis,
        )
        return Estimate(loss, grad, state, metrics)

    return Estimator(init, estimate)


class TrainedPredictor:
    """A meta-trained in-context learner in the evaluation slot (a `meta.evaluate.Predictor`)."""

    def __init__(self, learner: InContextLearner, theta: Theta, name: str):
        self.learner, self.theta, self.name = learner, theta, name

    def check(self, family: TaskFamily, length: int) -> None:
        """Raise UserError unless `family` and `length` fit what the model was trained on."""
        lr = self.learner
        if family.input_dim != lr.input_dim:
            raise UserError(
                f"learner {self.name!r} was trained on inputs of size {lr.input_dim}; "
                f"family {family.spec!r} has input size {family.input_dim}"
            )
        if (family.num_classes is None) != (lr.num_classes is None):
            trained = "regression" if lr.num_classes is None else "classification"
            raise UserError(
                f"learner {self.name!r} does {trained}; family {family.spec!r} does not"
            )
        if family.num_classes is not None and family.num_classes > lr.num_classes:
            raise UserError(
                f"learner {self.name!r} predicts {lr.num_classes} classes; family "
                f"{family.spec!r} has {family.num_classes}"
            )
        if length > lr.max_length:
            raise UserError(
                f"learner {self.name!r} was trained on sequences of at most {lr.max_length} "
                f"examples; asked for {length} (use --length or budgets below {lr.max_length})"
            )

    def predictor(self, family: TaskFamily, length: int, budgets, key: jax.Array):
        del key  # nothing to tune
        self.check(family, length)
        idx = jnp.asarray(budgets)
        regression = self.learner.num_classes is None

        # theta is an argument, not a constant of the program: models of one shape (a sweep's
        # points, seeds) share one compiled program through the persistent cache
        @jax.jit
        def predict(theta: Theta, x_NLD: jax.Array, y_NL: jax.Array) -> Predictions:
            out = self.learner.apply(theta, x_NLD, y_NL)[:, idx]
            if regression:
                return Predictions(out)
            return Predictions(jnp.argmax(out, -1), jax.nn.log_softmax(out, -1))

        return functools.partial(predict, self.theta)


def sequence_flops(num_params: int, depth: int, tokens: int, width: int) -> int:
    """Forward and backward FLOPs of one sequence of `tokens` tokens through a model of
    `num_params` parameters with `depth` attention layers of `width`: T (6 N + 12 L T d)
    (Kaplan et al. 2020, Sec. 2.1: 2N forward and 4N backward per token, plus attention)."""
    return tokens * (6 * num_params + 12 * depth * tokens * width)

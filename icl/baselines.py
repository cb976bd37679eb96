"""Baselines of in-context learning: learners with no meta-parameters that read the same
sequences as a meta-trained sequence model and fill the same slot of `meta.evaluate`.

Each predicts example k from the first k examples of its sequence, for every budget k asked,
with one vectorized function (vmapped over sequences and budgets).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from metalearn.core.errors import UserError
from metalearn.icl.fitted import FITTED, FittedBaseline, tuning_batch
from metalearn.meta.evaluate import Predictions
from metalearn.meta.tuning import LEARNING_RATES, best_of

# A rule maps (x [L, D], y [L], k, num_classes, lr) to the prediction for example k, or to the
# pair (prediction, log-probabilities [C]) when it has probabilities; lr is the tuned learning
# rate of the rules that train something (a traced scalar: one compile per grid).
Rule = Callable[..., jax.Array | tuple[jax.Array, jax.Array]]


def _mask(length: int, k: jax.Array) -> jax.Array:
    return (jnp.arange(length) < k).astype(jnp.float32)


RIDGE_FLOOR = 1e-3


def ridge_rule(lam: float) -> Rule:
    """Posterior mean under w ~ N(0, I) with noise variance `lam`: Bayes-optimal for
    linear_regression when lam = noise^2."""

    def rule(x, y, k, num_classes, lr):
        m = _mask(x.shape[0], k)
        xm = x * m[:, None]
        w = jnp.linalg.solve(xm.T @ x + lam * jnp.eye(x.shape[1]), xm.T @ y)
        return x[k] @ w

    return rule


def pool_tasks(family: Any) -> jax.Array:
    """The M task vectors of a family's finite pool, [M, D] (task i from fold_in(pool_key, i))."""
    if family.num_tasks is None:
        raise UserError(
            f"dmmse needs a finite pool of tasks (num_tasks=M); {family.spec!r} draws a fresh "
            "task per sequence, where ridge is the Bayes-optimal predictor"
        )
    keys = jax.vmap(jax.random.fold_in, (None, 0))(family.pool_key(), jnp.arange(family.num_tasks))
    tasks = jax.vmap(family.sample_task)(keys)
    if tasks.ndim != 2:
        raise UserError(f"dmmse needs tasks that are weight vectors; {family.spec!r} has others")
    return tasks


def dmmse_rule(tasks_MD: jax.Array, noise: float) -> Rule:
    """The posterior mean under a uniform prior over the pool's M task vectors (Raventós et al.
    2023's dMMSE): w = sum_i p_i w_i with p_i proportional to exp(-sum_{j<k} (y_j - w_i.x_j)^2
    / (2 noise^2)). Bayes-optimal on the pool's tasks. Memory grows as M x length per
    sequence evaluated at once."""
    var = max(noise**2, 1e-6)

    def rule(x, y, k, num_classes, lr):
        # squared residuals of every pool task on every example, summed over the first k
        # (independent of k, so computed once per sequence under the vmap over budgets)
        cum_ML = jnp.cumsum((y[None, :] - tasks_MD @ x.T) ** 2, axis=1)
        sse_M = jnp.where(k > 0, cum_ML[:, jnp.maximum(k - 1, 0)], 0.0)
        p_M = jax.nn.softmax(-0.5 * sse_M / var)
        return x[k] @ (p_M @ tasks_MD)

    return rule


def least_squares_rule(x, y, k, num_classes, lr):
    """Minimum-norm least squares on the first k examples."""
    m = _mask(x.shape[0], k)
    w = jnp.linalg.pinv(x * m[:, None]) @ (y * m)
    return x[k] @ w


def averaging_rule(x, y, k, num_classes, lr):
    """Garg et al.'s estimator: w = mean over seen examples of y_i x_i."""
    m = _mask(x.shape[0], k)
    w = (x * (m * y)[:, None]).sum(0) / jnp.maximum(k, 1)
    return x[k] @ w


def knn_rule(neighbours: int) -> Rule:
    """Majority label (classification) or mean target (regression) of the nearest seen inputs."""

    def rule(x, y, k, num_classes, lr):
        d = jnp.sum((x - x[k][None]) ** 2, axis=-1)
        d = jnp.where(jnp.arange(x.shape[0]) < k, d, jnp.inf)
        _, nn = jax.lax.top_k(-d, neighbours)
        valid = jnp.arange(neighbours) < k
        if num_classes is None:
            return jnp.sum(jnp.where(valid, y[nn], 0.0)) / jnp.maximum(
                jnp.minimum(k, neighbours), 1
            )
        votes = jnp.sum(jax.nn.one_hot(y[nn], num_classes) * valid[:, None], 0)
        # ties go to the nearest neighbour's label (never a label not yet seen)
        votes = votes + 1e-3 * valid[0] * jax.nn.one_hot(y[nn[0]], num_classes)
        return jnp.argmax(votes)

    return rule


def nearest_centroid_rule(x, y, k, num_classes, lr):
    """The class whose mean seen input is nearest."""
    m = _mask(x.shape[0], k)
    onehot = jax.nn.one_hot(y, num_classes) * m[:, None]
    counts = onehot.sum(0)
    centroids = (onehot.T @ x) / jnp.maximum(counts, 1)[:, None]
    d = jnp.sum((centroids - x[k][None]) ** 2, -1)
    return jnp.argmin(jnp.where(counts > 0, d, jnp.inf))


def _train(opt: optax.GradientTransformation, loss: Callable, params: Any, steps: int) -> Any:
    """`steps` full-batch steps of `opt` on `loss` from `params`, as one lax.scan."""

    def step(carry, _):
        p, s = carry
        u, s = opt.update(jax.grad(loss)(p), s, p)
        return (optax.apply_updates(p, u), s), None

    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=steps)
    return params


def logistic_rule(optimizer: Callable[..., optax.GradientTransformation], steps: int) -> Rule:
    """A linear softmax classifier trained full-batch for `steps` on the seen examples."""

    def rule(x, y, k, num_classes, lr):
        opt = optimizer(lr)
        m = _mask(x.shape[0], k)
        params = (jnp.zeros((x.shape[1], num_classes)), jnp.zeros(num_classes))

        def loss(p):
            logits = x @ p[0] + p[1][None]
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
            return jnp.sum(ce * m) / jnp.maximum(k, 1)

        params = _train(opt, loss, params, steps)
        logits = x[k] @ params[0] + params[1]
        return jnp.argmax(logits), jax.nn.log_softmax(logits)

    return rule


def mlp_rule(
    optimizer: Callable[..., optax.GradientTransformation], hidden: int, steps: int
) -> Rule:
    """A two-layer ReLU network trained full-batch for `steps` on the seen examples (squared
    error, or cross-entropy for classification), from one fixed initialization (Garg et al.
    2022's 'two-layer network trained by gradient descent on the prompt')."""

    def rule(x, y, k, num_classes, lr):
        opt = optimizer(lr)
        m = _mask(x.shape[0], k)
        out = 1 if num_classes is None else num_classes
        k1, k2 = jax.random.split(jax.random.key(0))
        params = (
            jax.random.normal(k1, (x.shape[1], hidden)) / jnp.sqrt(x.shape[1]),
            jnp.zeros(hidden),
            jax.random.normal(k2, (hidden, out)) / jnp.sqrt(hidden),
        )

        def forward(p, x):
            return jax.nn.relu(x @ p[0] + p[1][None]) @ p[2]

        def loss(p):
            o = forward(p, x)
            if num_classes is None:
                per = (o[:, 0] - y) ** 2
            else:
                per = optax.softmax_cross_entropy_with_integer_labels(o, y)
            return jnp.sum(per * m) / jnp.maximum(k, 1)

        params = _train(opt, loss, params, steps)
        o = forward(params, x[k][None])[0]
        if num_classes is None:
            return o[0]
        return jnp.argmax(o), jax.nn.log_softmax(o)

    return rule


@dataclasses.dataclass(frozen=True)
class Baseline:
    """A named rule, the kinds of family it applies to, and an optional tuned learning rate."""

    name: str
    kinds: tuple[str, ...]
    make_rule: Callable[[Any], Rule]  # family -> rule
    description: str
    lr_grid: tuple[float, ...] = ()  # tuned when not empty
    tune_sequences: int = 256
    needs_pool: bool = False  # defined only on a family with a finite pool of tasks

    def applies(self, family: Any) -> bool:
        """Whether the baseline is defined on `family` (its kind, and a pool if it needs one)."""
        kind = "regression" if family.num_classes is None else "classification"
        return kind in self.kinds and (not self.needs_pool or family.num_tasks is not None)

    def predictor(self, family: Any, length: int, budgets: Sequence[int], key: jax.Array):
        kind = "regression" if family.num_classes is None else "classification"
        if kind not in self.kinds:
            raise UserError(
                f"learner {self.name!r} applies to {' and '.join(self.kinds)} families; "
                f"{family.spec!r} is {kind}"
            )
        predict = _vectorize(self.make_rule(family), budgets, family.num_classes)
        lr = self.tune(predict, family, length, budgets, key) if self.lr_grid else 0.0
        return lambda x, y: _predictions(predict(x, y, lr))

    def tune(self, predict, family: Any, length: int, budgets: Sequence[int], key: jax.Array):
        """The grid learning rate with the best mean accuracy (or least squared error) over
        `budgets`, on tasks drawn from `key` (never the evaluation tasks)."""
        batch = tuning_batch(family, self.tune_sequences, length, key)
        target = batch.y[:, jnp.asarray(budgets)]

        def score(lr: float) -> float:
            value = _predictions(predict(batch.x, batch.y, lr)).value
            if family.num_classes is None:
                return -float(jnp.mean((value - target) ** 2))
            return float(jnp.mean(value == target))

        return best_of(self.lr_grid, score)


def _predictions(out) -> Predictions:
    """A vectorized rule's output as Predictions (with log-probabilities when it has them)."""
    return Predictions(*out) if isinstance(out, tuple) else Predictions(out)


def _vectorize(rule: Rule, budgets: Sequence[int], num_classes: int | None):
    """predict(x [N, L, D], y [N, L], lr) -> predictions [N, len(budgets)] (and log-probabilities
    [N, len(budgets), C] for a rule that has them), jitted once."""
    ks = jnp.asarray(budgets)
    per_seq = lambda x, y, lr: jax.vmap(lambda k: rule(x, y, k, num_classes, lr))(ks)  # noqa: E731
    return jax.jit(jax.vmap(per_seq, in_axes=(0, 0, None)))


BASELINES: dict[str, Baseline | FittedBaseline] = {
    b.name: b
    for b in (
        Baseline(
            "ridge",
            ("regression",),
            # floored so that noiseless families (Garg et al.'s) stay solvable in float32: at
            # 1e-6 a prefix shorter than dim made the solve return NaN
            lambda f: ridge_rule(max(getattr(f, "noise", 0.0) ** 2, RIDGE_FLOOR)),
            "posterior mean, lambda = noise^2 (Bayes-optimal for linear_regression)",
        ),
        Baseline(
            "dmmse",
            ("regression",),
            lambda f: dmmse_rule(pool_tasks(f), getattr(f, "noise", 0.0)),
            "posterior mean over the pool's task vectors (Bayes-optimal on pool tasks)",
            needs_pool=True,
        ),
        Baseline(
            "least_squares",
            ("regression",),
            lambda f: least_squares_rule,
            "minimum-norm least squares",
        ),
        Baseline(
            "averaging",
            ("regression",),
            lambda f: averaging_rule,
            "Garg et al.: w = mean of y_i x_i",
        ),
        Baseline(
            "knn",
            ("classification", "regression"),
            lambda f: knn_rule(1),
            "nearest seen neighbour's label or target",
        ),
        Baseline(
            "nearest_centroid",
            ("classification",),
            lambda f: nearest_centroid_rule,
            "class with the nearest mean seen input",
        ),
        Baseline(
            "logistic_sgd",
            ("classification",),
            lambda f: logistic_rule(optax.sgd, steps=100),
            "linear classifier, 100 steps of SGD, tuned lr",
            lr_grid=LEARNING_RATES,
        ),
        Baseline(
            "logistic_adam",
            ("classification",),
            lambda f: logistic_rule(optax.adam, steps=100),
            "linear classifier, 100 steps of Adam, tuned lr",
            lr_grid=LEARNING_RATES,
        ),
        Baseline(
            "mlp_adam",
            ("classification", "regression"),
            lambda f: mlp_rule(optax.adam, hidden=100, steps=200),
            "two-layer ReLU net (100 hidden), 200 steps of Adam on the seen examples, tuned lr",
            lr_grid=LEARNING_RATES,
            tune_sequences=64,
        ),
    )
}
BASELINES.update({b.name: b for b in FITTED})


def baseline(name: str) -> Baseline | FittedBaseline:
    if name not in BASELINES:
        raise UserError(
            f"unknown learner {name!r}; baselines: {', '.join(BASELINES)} (or a run directory)"
        )
    return BASELINES[name]

"""Baselines fitted by scikit-learn on each sequence's prefix: the learners Garg, Tsipras,
Liang & Valiant (2022) compare a transformer with on sparse linear functions (LASSO) and on
decision trees (greedy tree learning, gradient boosting). Each refits per sequence and budget
on the host, so they cost far more per sequence than the vectorized rules of
`icl.baselines`; their one hyperparameter is tuned on sequences of their own.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from metalearn.core.errors import UserError
from metalearn.meta.evaluate import Predictions, subsets_of
from metalearn.meta.tuning import best_of


def tuning_batch(family: Any, num: int, length: int, key: jax.Array) -> Any:
    """Sequences a baseline tunes on: tasks outside the family's pool (or fresh ones), drawn
    from `key`, never the evaluation's."""
    return family.sample(key, num, length, subsets_of(family)[-1])


@dataclasses.dataclass(frozen=True)
class FittedBaseline:
    """A scikit-learn regressor refitted on the first k examples to predict example k (the
    prior mean, 0, at k = 0), its hyperparameter the best of `grid` by squared error."""

    name: str
    make: Callable[[Any], Any]  # hyperparameter -> an unfitted scikit-learn regressor
    grid: tuple[Any, ...]
    description: str
    kinds: tuple[str, ...] = ("regression",)
    tune_sequences: int = 32
    needs_pool: bool = False

    def applies(self, family: Any) -> bool:
        return family.num_classes is None

    def predictor(self, family: Any, length: int, budgets: Sequence[int], key: jax.Array):
        if not self.applies(family):
            raise UserError(
                f"learner {self.name!r} applies to regression; {family.spec!r} is classification"
            )
        budgets = tuple(budgets)
        tune = tuning_batch(family, self.tune_sequences, length, key)
        x, y = np.asarray(tune.x, np.float64), np.asarray(tune.y, np.float64)
        target = y[:, list(budgets)]

        def score(h) -> float:
            return -float(np.mean((self.fit_predict(h, x, y, budgets) - target) ** 2))

        best = best_of(self.grid, score)

        def predict(x_NLD: jax.Array, y_NL: jax.Array) -> Predictions:
            x, y = np.asarray(x_NLD, np.float64), np.asarray(y_NL, np.float64)
            return Predictions(jnp.asarray(self.fit_predict(best, x, y, budgets), jnp.float32))

        return predict

    def fit_predict(
        self, h: Any, x: np.ndarray, y: np.ndarray, budgets: Sequence[int]
    ) -> np.ndarray:
        """[N, B] each sequence's prediction of example k from its first k examples."""
        from sklearn.exceptions import ConvergenceWarning

        out = np.zeros((len(x), len(budgets)))
        with warnings.catch_warnings():
            # LASSO on a few examples stops at max_iter now and then; its answer is still the
            # baseline's answer, and a warning per fit would bury the report
            warnings.simplefilter("ignore", category=ConvergenceWarning)
            for i in range(len(x)):
                for j, k in enumerate(budgets):
                    if k > 0:
                        model = self.make(h).fit(x[i, :k], y[i, :k])
                        out[i, j] = model.predict(x[i, k][None])[0]
        return out


def _lasso(alpha: float):
    from sklearn.linear_model import Lasso

    return Lasso(alpha=alpha, fit_intercept=False, max_iter=10_000)


def _tree(max_depth: int | None):
    from sklearn.tree import DecisionTreeRegressor

    return DecisionTreeRegressor(max_depth=max_depth, random_state=0)


def _boosting(max_depth: int):
    from sklearn.ensemble import GradientBoostingRegressor

    return GradientBoostingRegressor(n_estimators=50, max_depth=max_depth, random_state=0)


FITTED: tuple[FittedBaseline, ...] = (
    FittedBaseline(
        "lasso",
        _lasso,
        (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0),
        "LASSO (scikit-learn), alpha tuned (Garg et al.'s sparse-linear baseline)",
    ),
    FittedBaseline(
        "tree",
        _tree,
        (1, 2, 3, 4, 6, None),
        "greedy regression tree (scikit-learn), depth tuned",
    ),
    FittedBaseline(
        "boosting",
        _boosting,
        (1, 2, 3, 4),
        "gradient boosting, 50 trees (scikit-learn), depth tuned",
    ),
)

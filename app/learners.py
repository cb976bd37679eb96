"""`--learner NAME` over every learner kind: the one place that composes the registries of
the floors (in-context baselines in `metalearn.icl`, hand-designed optimizers in
`metalearn.lopt`) with run directories."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from metalearn.core.errors import UserError
from metalearn.icl.baselines import BASELINES
from metalearn.lopt import HAND_DESIGNED
from metalearn.lopt.learner import hand_designed_learner
from metalearn.meta.evaluate import Learner
from metalearn.meta.tuning import LEARNING_RATES, grid_label
from metalearn.runs import Run, load


def _optimizer(name: str) -> Callable[[], Learner]:
    # the learning rate is tuned on the one grid, on runs of its own, when it is prepared
    return lambda: hand_designed_learner(name, HAND_DESIGNED[name], LEARNING_RATES)


# name -> (a fresh learner, one line for `metalearn learners`)
LEARNERS: dict[str, tuple[Callable[[], Learner], str]] = {
    **{
        name: (lambda b=b: b, f"[{', '.join(b.kinds)}] {b.description}")
        for name, b in BASELINES.items()
    },
    **{
        name: (
            _optimizer(name),
            f"[steps, examples] hand-designed (optax), learning rate tuned on "
            f"{grid_label(LEARNING_RATES)}: trains an inner problem, or an MLP on the examples "
            "seen",
        )
        for name in HAND_DESIGNED
    },
}


def resolve(name: str) -> tuple[Learner, Run | None]:
    """The learner `name` (a registered name or a run directory) and its run, if it is one."""
    if name in LEARNERS:
        return LEARNERS[name][0](), None
    if not Path(name).is_dir():
        raise UserError(
            f"unknown learner {name!r}; use a baseline ({', '.join(BASELINES)}), an optimizer "
            f"({', '.join(HAND_DESIGNED)}) or a run directory written by `metalearn train`"
        )
    run = load(name)
    return run.learner, run

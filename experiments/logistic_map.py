"""A chaotic toy system meta-trained through truncated unrolls: the logistic map.

    metalearn train logistic_map        # 7 s, 0.4 GB on a 2-core CPU
    metalearn chaos logistic_map --lengths 5,10,20,40,80 --samples 512 --sigma 0.05 \
        --out runs/chaos_logistic_map   # 39 s, 0.4 GB on a 2-core CPU

x <- r x (1 - x) from a random x in (0.1, 0.9); each step's loss is (x - target)^2, and theta
is r. From r = 3.7 the map is chaotic: the exact gradient of the mean episode loss explodes with
the episode length (Metz et al. 2021), while PES follows the smoothed objective down to the
stable regime, where x settles at the fixed point 1 - 1/r = target, i.e. r = 1 / (1 - target).
The whole system is the `LogisticMap` class below: a `meta.truncated.TruncatedTask` in a few
lines.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp

from metalearn.core.errors import UserError
from metalearn.core.files import atomic_write_text
from metalearn.meta.estimators import ESTIMATORS
from metalearn.meta.evaluate import Curves
from metalearn.meta.experiment import Setup
from metalearn.meta.loop import LoopConfig
from metalearn.meta.optim import OptimConfig
from metalearn.meta.truncated import episode_loss


@dataclasses.dataclass(frozen=True)
class LogisticMap:
    """x <- theta x (1 - x); loss (x - target)^2."""

    horizon: int | None = 100
    target: float = 0.3

    def init(self, key: jax.Array) -> jax.Array:
        return jax.random.uniform(key, minval=0.1, maxval=0.9)

    def step(self, theta, x, key):
        x = theta * x * (1 - x)
        return x, (x - self.target) ** 2


@dataclasses.dataclass(frozen=True)
class Config:
    r: float = 3.7  # theta at the start
    target: float = 0.3
    horizon: int = 100
    truncation: int = 10
    estimator: str = "pes"
    num_workers: int = 64
    sigma: float = 0.05
    optim: OptimConfig = OptimConfig(lr=1e-2, warmup=0, clip=0.0)
    loop: LoopConfig = LoopConfig(steps=500, log_every=50, checkpoint_every=0)

    def setup(self) -> Setup:
        if self.estimator not in ESTIMATORS:
            raise UserError(
                f"estimator must be one of {', '.join(ESTIMATORS)}, got {self.estimator!r}"
            )
        if not 0 < self.target < 1:
            raise UserError(f"target must be in (0, 1), got {self.target}")
        task = LogisticMap(self.horizon, self.target)
        estimator = ESTIMATORS[self.estimator](
            task, num_workers=self.num_workers, truncation=self.truncation, sigma=self.sigma
        )

        def learner(theta, name):
            raise UserError("the logistic map is a toy system, not a learner to evaluate")

        return Setup(
            init=lambda key: jnp.float32(self.r),
            estimator=estimator,
            optim=self.optim,
            loop=self.loop,
            learner=learner,
            report=lambda theta, run_dir, name: self.report(task, theta, run_dir),
            truncated_task=task,
        )

    def report(self, task: LogisticMap, theta, run_dir: Path) -> Curves:
        keys = jax.random.split(jax.random.key(1), 1000)
        loss = jax.vmap(lambda k: episode_loss(task, theta, k))(keys).mean()
        best = 1 / (1 - self.target)
        text = (
            f"r = {float(theta):.4f} (started at {self.r}; the stable fixed point at the target "
            f"needs r = {best:.4f}); mean episode loss {float(loss):.5f}"
        )
        atomic_write_text(run_dir / "table.txt", text + "\n")
        print(text)
        return Curves(())

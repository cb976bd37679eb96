"""A per-parameter MLP learned optimizer meta-trained with PES on small MLP problems.

    metalearn train lopt_mlp

Each episode trains a fresh one-hidden-layer MLP on one random projection of the digits
(labels permuted) for `horizon` steps with the learned optimizer; PES (or --set
estimator=nres|truncated_es|tbptt) estimates the gradient of the mean training loss from
windows of `truncation` steps, workers spread over their episodes. The report compares
training curves on held-out problems with Adam whose learning rate is tuned per problem on a
half-decade grid (1e-4 .. 1e-1, best mean final loss over the seeds).

Work in progress (issue 3): the default setting is a smoke-sized study, not yet the goal.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np
import optax

from lopt import LOPTS, InnerTraining, MLPProblem
from lopt.evaluate import curve, runs, tuned
from meta.errors import UserError
from meta.estimators import ESTIMATORS, TruncatedBackprop
from meta.evaluate import Curves
from meta.experiment import Setup
from meta.files import atomic_write_text
from meta.loop import LoopConfig
from meta.optim import OptimConfig
from meta.results import plot, table, write_json

TRAIN = "train"


@dataclasses.dataclass(frozen=True)
class ProblemConfig:
    family: str = "projected:base=digits,dim=16"
    hidden: tuple[int, ...] = (32,)
    batch_size: int = 128

    def build(self) -> MLPProblem:
        return MLPProblem(self.family, tuple(self.hidden), self.batch_size)


@dataclasses.dataclass(frozen=True)
class LOptEvalConfig:
    """Held-out problems: SPECs `family|hidden|batch` (hidden as 32x32), or 'train'."""

    problems: tuple[str, ...] = (TRAIN, "projected:base=digits,dim=16|64|128")
    steps: int = 0  # 0: the meta-training horizon
    seeds: int = 3
    every: int = 10
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class Config:
    lopt: str = "mlp"
    lopt_hidden: int = 32
    problem: ProblemConfig = ProblemConfig()
    horizon: int = 100
    truncation: int = 10
    estimator: str = "pes"
    num_workers: int = 8
    sigma: float = 0.01
    optim: OptimConfig = OptimConfig(lr=3e-3, warmup=20, clip=1.0)
    loop: LoopConfig = LoopConfig(steps=300, log_every=10, checkpoint_every=100)
    eval: LOptEvalConfig = LOptEvalConfig()

    def make_lopt(self):
        if self.lopt not in LOPTS:
            raise UserError(f"lopt must be one of {', '.join(LOPTS)}, got {self.lopt!r}")
        return LOPTS[self.lopt](hidden=self.lopt_hidden)

    def setup(self) -> Setup:
        if self.estimator not in ESTIMATORS or self.estimator == "full_es":
            allowed = ", ".join(k for k in ESTIMATORS if k != "full_es")
            raise UserError(f"estimator must be one of {allowed}, got {self.estimator!r}")
        if self.horizon < 1:
            raise UserError(f"horizon must be a positive int, got {self.horizon}")
        lopt = self.make_lopt()
        task = InnerTraining(lopt, self.problem.build(), self.horizon)
        cls = ESTIMATORS[self.estimator]
        kw = {} if cls is TruncatedBackprop else {"sigma": self.sigma}
        estimator = cls(task, num_workers=self.num_workers, truncation=self.truncation, **kw)

        def learner(theta, name):
            raise UserError(
                "learned optimizers are evaluated with optimization curves (this experiment's "
                "report); the examples protocol of `metalearn eval` comes later"
            )

        return Setup(
            init=lopt.init,
            estimator=estimator,
            optim=self.optim,
            loop=self.loop,
            learner=learner,
            report=lambda theta, run_dir, name: self.report(lopt, theta, run_dir, name),
        )

    def held_out(self) -> list[MLPProblem]:
        out = []
        for spec in self.eval.problems:
            if spec == TRAIN:
                out.append(self.problem.build())
                continue
            parts = spec.split("|")
            if len(parts) != 3:
                raise UserError(
                    f"eval problem must be 'family|hidden|batch' or 'train', got {spec!r}"
                )
            hidden = tuple(int(h) for h in parts[1].split("x") if h)
            out.append(MLPProblem(parts[0], hidden, int(parts[2])))
        return out

    def report(self, lopt, theta, run_dir: Path, name: str) -> Curves:
        steps = self.eval.steps or self.horizon
        key = jax.random.key(self.eval.seed + 1)  # problems unseen in meta-training
        curves, lines = Curves(()), []
        for problem in self.held_out():
            losses, final = runs(lopt, theta, problem, steps, self.eval.seeds, key)
            adam = tuned("adam", optax.adam, problem, steps, self.eval.seeds, key)
            a_losses, a_final, finals = adam.losses, adam.final, adam.grid
            curves += Curves(
                (
                    curve(name, losses, problem, self.eval.every, self.eval.seed),
                    curve(adam.name, a_losses, problem, self.eval.every, self.eval.seed),
                )
            )
            se = lambda v: v.std(ddof=1) / np.sqrt(len(v))  # noqa: E731
            lines.append(
                f"{curves.curves[-1].family}: final training loss after {steps} steps: "
                f"{name} {final.mean():.4f}±{se(final):.4f}, {adam.name} "
                f"{a_final.mean():.4f}±{se(a_final):.4f} (grid: "
                + ", ".join(f"{lr:.0e}: {v:.3f}" for lr, v in finals.items())
                + ")"
            )
        write_json(curves, run_dir / "results.json")
        plot(curves, run_dir / "curves.png", title=name)
        text = table(curves) + "\n" + "\n".join(lines)
        atomic_write_text(run_dir / "table.txt", text + "\n")
        print(text)
        return curves

"""A per-parameter MLP learned optimizer meta-trained with NRES on small MLP problems.

    metalearn train lopt_mlp   # 8-12 min of meta-training on a 2-core CPU, then the report; 1.9 GB

Each episode trains a fresh one-hidden-layer MLP on one random projection of the digits
(labels permuted) for `horizon` = 100 steps with the learned optimizer. Two training problems
(widths 32 and 128), 8 NRES workers each (Noise-Reuse ES: one perturbation per episode),
windows of 10 steps, workers spread over their episodes, 8000 meta-steps, minibatches of a
random 16..128 examples; the meta-objective is the mean log training loss.
`--set estimator=pes|truncated_es|tbptt`, `--set lopt=adafac_mlp|rnn_mlp|velo` swap the
estimator and the architecture; `--set sampled=4` adds four training problems drawn from a
family of MLPs, CNNs and patch transformers (`lopt.problem_family.ProblemFamily`), and a
problem SPEC such as `images:base=digits|conv:8x16|128` names one directly.

The report (`meta.evaluate`, budgets in steps) trains fresh problems (tasks unseen in
meta-training) with the learned optimizer and with Adam whose learning rate is tuned per
problem on the half-decade grid 1e-4 .. 1e1 (`meta.tuning.LEARNING_RATES`; best mean final
loss over 3 separate runs), and prints the training loss (on 1024 examples of the task) every
10 steps and after 100 steps over 10 runs, with paired differences. Held out: width 64 (never
trained on) on the digits, and, when METALEARN_DATA_DIR holds them, width 64 on projected
Fashion-MNIST and MNIST (datasets never trained on).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np
import optax

from metalearn.core.errors import UserError
from metalearn.core.files import atomic_write_text
from metalearn.lopt import LOPTS, MLP, InnerProblem, InnerTraining, VeLO
from metalearn.lopt.learner import OptimizerLearner, hand_designed_learner
from metalearn.lopt.problem_family import ProblemFamily
from metalearn.meta.estimators import ESTIMATORS, mixture
from metalearn.meta.evaluate import Curves, evaluate
from metalearn.meta.experiment import EvalDefaults, Setup
from metalearn.meta.loop import LoopConfig
from metalearn.meta.optim import OptimConfig
from metalearn.meta.results import plot, table, write_json
from metalearn.meta.tuning import LEARNING_RATES, grid_label

TRAIN = "train"


@dataclasses.dataclass(frozen=True)
class LOptEvalConfig:
    """Held-out problems: SPECs `family|model|batch` (model as 32x32 or conv:8x16, see
    `lopt.models`), or 'train' (the training problems, on unseen tasks). Adam's learning rate
    is tuned per problem on `tune_seeds` runs of their own; both are reported over `seeds`
    runs, the training loss every `every` steps."""

    problems: tuple[str, ...] = (TRAIN, "projected:base=digits,dim=16|64|128")
    optional: tuple[str, ...] = (  # skipped with a line when their data is missing
        "projected:base=fashion_mnist,dim=16,split=test|64|128",
        "projected:base=mnist,dim=16,split=test|64|128",
    )
    steps: int = 0  # 0: the meta-training horizon
    seeds: int = 10
    tune_seeds: int = 3
    every: int = 10
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class Config:
    lopt: str = "mlp"
    lopt_hidden: int = 32  # 0: the architecture's default
    problems: tuple[str, ...] = (
        "projected:base=digits,dim=16|32|128",
        "projected:base=digits,dim=16|128|128",
    )
    # more training problems drawn from a family of architectures (0: none), see ProblemFamily
    sampled: int = 0
    sample: ProblemFamily = ProblemFamily()
    sample_seed: int = 0
    rescale: float = 0.0  # augmentations of the training problems (see InnerProblem)
    # each minibatch a random 16..batch examples: noisier gradients, as on bigger datasets (with
    # 0, MNIST at width 64 lost to tuned Adam, 0.823 against 0.785)
    min_batch: int = 16
    horizon: int = 100
    log_loss: bool = True  # meta-objective: mean log training loss instead of mean loss
    truncation: int = 10
    # NRES (seeds 0 and 1) beat PES (seed 0) on all five report problems (README, Results)
    estimator: str = "nres"
    num_workers: int = 8  # per training problem
    sigma: float = 0.01
    # tbptt only: recompute each inner step in the backward pass (less memory per window)
    remat: bool = False
    optim: OptimConfig = OptimConfig(lr=3e-3, warmup=20, clip=1.0)
    loop: LoopConfig = LoopConfig(steps=8000, log_every=100, checkpoint_every=2000)
    eval: LOptEvalConfig = LOptEvalConfig()

    def make_lopt(self):
        if self.lopt not in LOPTS:
            raise UserError(f"lopt must be one of {', '.join(LOPTS)}, got {self.lopt!r}")
        cls = LOPTS[self.lopt]
        kwargs = {"num_steps": self.horizon} if cls is VeLO else {}
        if self.lopt_hidden:
            kwargs["ff_hidden" if cls is VeLO else "hidden"] = self.lopt_hidden
        return cls(**kwargs)

    def training_problems(self) -> list[InnerProblem]:
        if not self.problems:
            raise UserError("problems must name at least one training problem")
        if self.sampled < 0:
            raise UserError(f"sampled must be >= 0 (extra training problems), got {self.sampled}")
        aug = {"rescale": self.rescale, "min_batch": self.min_batch}
        drawn = self.sample.sample_many(jax.random.key(self.sample_seed), self.sampled, **aug)
        named = [InnerProblem.from_spec(spec).augmented(**aug) for spec in self.problems]
        return named + drawn

    def setup(self) -> Setup:
        if self.estimator not in ESTIMATORS or self.estimator == "full_es":
            allowed = ", ".join(k for k in ESTIMATORS if k != "full_es")
            raise UserError(f"estimator must be one of {allowed}, got {self.estimator!r}")
        if self.horizon < 1:
            raise UserError(f"horizon must be a positive int, got {self.horizon}")
        ev = self.eval
        if ev.seeds < 2 or ev.tune_seeds < 1:
            raise UserError(
                "eval.seeds must be at least 2 (for a standard error) and eval.tune_seeds "
                f"positive, got {ev.seeds} and {ev.tune_seeds}"
            )
        if ev.every < 1 or ev.steps < 0:
            raise UserError(
                f"eval.every must be a positive int and eval.steps >= 0 (0: the horizon), got "
                f"{ev.every} and {ev.steps}"
            )
        if self.remat and self.estimator != "tbptt":
            raise UserError(
                f"remat=true needs estimator tbptt (the one that backpropagates through the "
                f"unroll), got {self.estimator!r}"
            )
        lopt = self.make_lopt()
        extra = {"remat": True} if self.remat else {}
        tasks = [
            InnerTraining(lopt, problem, self.horizon, self.log_loss)
            for problem in self.training_problems()
        ]
        parts = tuple(
            ESTIMATORS[self.estimator](
                task,
                num_workers=self.num_workers,
                truncation=self.truncation,
                sigma=self.sigma,
                **extra,
            )
            for task in tasks
        )
        self.held_out()  # bad eval specs fail before training

        def learner(theta, name):
            # the examples protocol: an MLP (of the first training problem's widths, if that is
            # an MLP) trained on the k examples seen for the meta-training horizon
            model = InnerProblem.from_spec(self.problems[0]).model
            hidden = model.hidden if isinstance(model, MLP) else MLP().hidden
            return OptimizerLearner(lopt, theta, name, hidden, self.horizon)

        return Setup(
            init=lopt.init,
            estimator=parts[0] if len(parts) == 1 else mixture(parts),
            optim=self.optim,
            loop=self.loop,
            learner=learner,
            report=lambda theta, run_dir, name: self.report(lopt, theta, run_dir, name),
            # `--family train`: the first training problem's task family
            eval_defaults=EvalDefaults(
                family=InnerProblem.from_spec(self.problems[0]).family, steps=self.horizon
            ),
            truncated_task=tasks[0],
        )

    def held_out(self) -> list[tuple[InnerProblem, bool]]:
        """(problem, optional) pairs."""
        out = []
        for spec, optional in [(s, False) for s in self.eval.problems] + [
            (s, True) for s in self.eval.optional
        ]:
            if spec == TRAIN:
                for problem in self.training_problems():
                    out.append((problem.augmented(), optional))
            else:
                out.append((InnerProblem.from_spec(spec), optional))
        return out

    def report(self, lopt, theta, run_dir: Path, name: str) -> Curves:
        steps = self.eval.steps or self.horizon
        ev = self.eval
        budgets = sorted(set(range(0, steps, ev.every)) | {steps})
        # problems unseen in meta-training; Adam is tuned on runs apart from the reported ones
        k_tune, k_eval = jax.random.split(jax.random.key(ev.seed + 1))
        learned = OptimizerLearner(lopt, theta, name)
        adam = hand_designed_learner("adam", optax.adam, LEARNING_RATES, tune_runs=ev.tune_seeds)
        curves, rows, skipped = Curves(()), [], []
        for problem, optional in self.held_out():
            try:
                problem.fam  # noqa: B018 - loads the base data
            except UserError as e:
                if not optional:
                    raise
                skipped.append(f"skipped {problem.spec}: {e}")
                continue
            tuned = adam.tuned(problem, budgets, k_tune)
            pair = [
                evaluate(o, problem, budgets, ev.seeds, k_eval, seed=ev.seed)
                for o in (learned, tuned)
            ]
            curves += pair[0] + pair[1]
            lr = float(tuned.theta["lr"])
            rows.append((problem.label, *(c.get().per_sequence[:, -1] for c in pair), lr))
        if not rows:
            raise UserError("no evaluation problem could be run: " + "; ".join(skipped))
        write_json(curves, run_dir / "results.json")
        plot(curves, run_dir / "curves.png", title=name)
        text = "\n".join([table(curves), final_table(name, rows, steps, ev), *skipped])
        atomic_write_text(run_dir / "table.txt", text + "\n")
        print(text)
        return curves


def final_table(name: str, rows, steps: int, ev: LOptEvalConfig) -> str:
    """Final training loss of the learned optimizer and of tuned Adam per problem."""
    se = lambda v: v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else float("nan")  # noqa: E731
    width = max(len(r[0]) for r in rows)
    lines = [
        f"final training loss after {steps} steps (mean ± stderr over {ev.seeds} runs; Adam's "
        f"learning rate tuned per problem on the grid {grid_label(LEARNING_RATES)} by the mean of "
        f"{ev.tune_seeds} separate runs)",
        f"{'problem':<{width}}  {name:>17}  {'adam (tuned)':>17}  {'lr':>5}  {'difference':>17}",
    ]
    for problem, final, adam, lr in rows:
        diff = final - adam  # the runs are paired: same tasks, inits and batches
        lines.append(
            f"{problem:<{width}}  {final.mean():>8.4f} ± {se(final):<6.4f}  "
            f"{adam.mean():>8.4f} ± {se(adam):<6.4f}  {lr:>5.0e}  "
            f"{diff.mean():>+8.4f} ± {se(diff):<6.4f}"
        )
    return "\n".join(lines)

"""The shared shape of an in-context-learning experiment: train a sequence model on a task
family by backprop, then evaluate it beside baselines on its own and held-out families."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from metalearn import data
from metalearn.core.errors import UserError
from metalearn.core.files import atomic_write_text
from metalearn.icl.baselines import baseline
from metalearn.icl.learner import (
    InContextLearner,
    ModelConfig,
    SequenceObjective,
    TrainedPredictor,
    pipelined_local,
)
from metalearn.meta.compare import distance_curves
from metalearn.meta.evaluate import Curves, Learner, check_budgets, evaluate
from metalearn.meta.experiment import Batchable, EvalDefaults, Setup
from metalearn.meta.loop import LoopConfig
from metalearn.meta.objective import backprop
from metalearn.meta.optim import OptimConfig
from metalearn.meta.results import plot, table, write_json

TRAIN = "train"  # in eval.families: the training family itself (its own pool: seen / unseen)


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """The study after training. Families are SPECs or 'train'; in a SPEC, `{dim}` and
    `{num_classes}` stand for the training family's, so held-out families follow --set family=.
    Baselines that do not apply to a family (its kind, or dmmse without a pool) are skipped
    for it."""

    families: tuple[str, ...] = (TRAIN,)
    optional: tuple[str, ...] = ()  # evaluated when their data can be loaded, else skipped
    baselines: tuple[str, ...] = ()
    budgets: tuple[int, ...] = ()  # empty: every budget 0..length-1
    sequences: int = 1000
    seed: int = 0
    reference: str = ""  # a baseline: also report the learner's metric as a ratio to it
    # baselines (among `baselines`): also report the learner's distance to their predictions
    distances: tuple[str, ...] = ()
    # families also scored every loop.eval_every steps during training, as NAME=SPEC (logged
    # as eval/NAME/acc@k, or mse@k) or SPEC (NAME: the family's name); `{dim}` as above
    periodic: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class ICLConfig:
    """Meta-train an in-context learner on `family` with sequences of `length` examples."""

    family: str = "linear_regression:dim=8,noise=0.5"
    length: int = 16
    batch_size: int = 128
    weighting: str = "uniform"  # or "log": mean over positions of log MSE (regression)
    model: ModelConfig = ModelConfig()
    # > 0: local updates (model.local_blocks stages) pipelined over that many microbatches,
    # stage k on device k (icl.learner.pipelined_local); 0: one program on the task mesh
    local_pipeline: int = 0
    optim: OptimConfig = OptimConfig()
    loop: LoopConfig = LoopConfig()
    eval: EvalConfig = EvalConfig()

    def setup(self) -> Setup:
        family = data.from_spec(self.family)
        if self.length < 2:
            raise UserError(f"length must be at least 2, got {self.length}")
        if self.batch_size < 1:
            raise UserError(f"batch_size must be a positive int, got {self.batch_size}")
        if self.weighting not in ("uniform", "log"):
            raise UserError(f"weighting must be uniform or log, got {self.weighting!r}")
        if self.weighting == "log" and family.num_classes is not None:
            raise UserError("weighting=log is for regression families")
        learner = InContextLearner.for_family(self.model, family, self.length)
        self.check_eval(TrainedPredictor(learner, None, "the model"))
        objective = SequenceObjective(learner, family, self.batch_size, self.length, self.weighting)
        if self.local_pipeline < 0:
            raise UserError(f"local_pipeline must be >= 0 (0 = off), got {self.local_pipeline}")
        pipelined = self.local_pipeline > 0
        return Setup(
            init=objective.init,
            estimator=(
                pipelined_local(objective, self.local_pipeline)
                if pipelined
                else backprop(objective)
            ),
            optim=self.optim,
            loop=self.loop,
            learner=lambda theta, name: TrainedPredictor(learner, theta, name),
            periodic_eval=held_out_scores(
                learner, family, self.length, others=self.periodic_families()
            ),
            report=lambda theta, run_dir, name: self.report(
                TrainedPredictor(learner, theta, name), run_dir, name
            ),
            eval_defaults=EvalDefaults(family=self.family, examples=self.length),
            flops_per_step=lambda theta: learner.step_flops(theta, self.batch_size),
            batchable=None if pipelined else self._batchable(learner, family),
        )

    def _batchable(self, learner: InContextLearner, family: data.TaskFamily) -> Batchable:
        """Points that differ only in their pool size (or seed, or learning rate) train as one
        vmapped model: the pool size is the one traced scalar."""
        finite = family.num_tasks is not None
        shape = dataclasses.replace(family, num_tasks=1).spec if finite else family.spec
        signature = (self.model, shape, finite, self.length, self.batch_size, self.weighting)

        def estimator(scalars):
            fam = family.with_pool_size(scalars["num_tasks"]) if finite else family
            return backprop(
                SequenceObjective(learner, fam, self.batch_size, self.length, self.weighting)
            )

        scalars = {"num_tasks": family.num_tasks} if finite else {}
        return Batchable(signature, scalars, estimator)

    def budgets(self) -> tuple[int, ...]:
        return self.eval.budgets or tuple(range(self.length))

    def check_eval(self, predictor: TrainedPredictor) -> None:
        """Raise UserError for any eval.* setting the report would refuse, before training
        starts (optional families are checked when the report loads them)."""
        ev = self.eval
        if ev.sequences < 2:
            raise UserError(
                f"eval.sequences must be at least 2 (for a standard error), got {ev.sequences}"
            )
        try:
            check_budgets(self.budgets(), below=self.length, bound="the length")
        except UserError as e:
            raise UserError(f"eval.budgets: {e}") from None
        for name in ev.baselines:
            baseline(name)
        if ev.reference and ev.reference not in ev.baselines:
            raise UserError(
                f"eval.reference {ev.reference!r} must be one of eval.baselines "
                f"({', '.join(ev.baselines) or 'none given'})"
            )
        for name in ev.distances:
            if name not in ev.baselines:
                raise UserError(
                    f"eval.distances: {name!r} must be one of eval.baselines "
                    f"({', '.join(ev.baselines) or 'none given'})"
                )
        for family in self._eval_families(optional=False):
            predictor.check(family, self.length)

    def periodic_families(self) -> dict[str, data.TaskFamily]:
        """eval.periodic as name -> family."""
        train = data.from_spec(self.family)
        out: dict[str, data.TaskFamily] = {}
        for item in self.eval.periodic:
            name, sep, spec = item.partition("=")
            if not sep or ":" in name:  # a bare SPEC: named by its family
                name, spec = data.parse_spec(item)[0], item
            if name in out:
                raise UserError(f"eval.periodic names {name!r} twice; give NAME=SPEC")
            family = data.from_spec(spec.format(dim=train.input_dim, num_classes=train.num_classes))
            if (family.input_dim, family.num_classes) != (train.input_dim, train.num_classes):
                raise UserError(
                    f"eval.periodic {name!r}: inputs of {family.input_dim} dimensions and "
                    f"{family.num_classes} classes; the model reads {train.input_dim} and "
                    f"predicts {train.num_classes}"
                )
            out[name] = family
        return out

    def _eval_families(self, optional: bool = True) -> list[data.TaskFamily]:
        train = data.from_spec(self.family)

        def build(spec: str) -> data.TaskFamily:
            if spec == TRAIN:
                return train
            return data.from_spec(spec.format(dim=train.input_dim, num_classes=train.num_classes))

        out = [build(s) for s in self.eval.families]
        for spec in self.eval.optional if optional else ():
            try:
                out.append(build(spec))
            except UserError as e:
                shown = spec.format(dim=train.input_dim, num_classes=train.num_classes)
                print(f"skipping optional family {shown}: {e}")
        return out

    def report(self, model: Learner, run_dir: Path, name: str) -> Curves:
        """Evaluate the trained learner `model` (any learner of the examples protocol) and the
        baselines; write results.json, curves.png and table.txt into the run directory, and
        print the table."""
        key = jax.random.key(self.eval.seed)
        curves = Curves(())
        for family in self._eval_families():
            learners = [model]
            learners += [baseline(b) for b in self.eval.baselines if baseline(b).applies(family)]
            setting = dict(length=self.length, seed=self.eval.seed)
            for lr in learners:
                curves += evaluate(lr, family, self.budgets(), self.eval.sequences, key, **setting)
            references = [lr for lr in learners[1:] if lr.name in self.eval.distances]
            if references:
                curves += distance_curves(
                    learners[0],
                    references,
                    family,
                    self.budgets(),
                    self.eval.sequences,
                    key,
                    **setting,
                )
        write_json(curves, run_dir / "results.json")
        plot(curves, run_dir / "curves.png", title=name)
        text = table(curves, _shown_budgets(self.budgets()))
        if self.eval.reference:
            text += "\n" + ratio_table(curves, name, self.eval.reference)
        atomic_write_text(run_dir / "table.txt", text + "\n")
        print(text)
        return curves


def ratio_table(curves: Curves, learner: str, reference: str) -> str:
    """The learner's metric divided by the reference's at each budget, on the same sequences,
    with a paired standard error (delta method: var(a - r b) / (n mean(b)^2))."""
    lines = []
    for c in curves:
        # a ratio of means per sequence; the ECE is a statistic of the whole set
        if c.learner != learner or c.metric == "ece":
            continue
        try:
            ref = curves.get(subset=c.subset, learner=reference, family=c.family, metric=c.metric)
        except KeyError:
            continue
        a, b = c.per_sequence, ref.per_sequence
        r = a.mean(0) / b.mean(0)
        se = (a - r * b).std(0, ddof=1) / (np.sqrt(len(a)) * b.mean(0))
        lines.append(f"{c.family} [{c.subset}] {c.metric} of {learner} / {reference}:")
        lines.append("budget " + " ".join(f"{k:>12d}" for k in c.budget))
        lines.append(
            "ratio  " + " ".join(f"{x:>6.3f}±{s:<5.3f}" for x, s in zip(r, se, strict=True))
        )
        lines.append(f"worst ratio {r.max():.3f} at budget {c.budget[int(r.argmax())]}")
    return "\n".join(lines)


def _shown_budgets(budgets: tuple[int, ...]) -> list[int]:
    """At most ~8 columns: 0, powers of two, and the last budget."""
    if len(budgets) <= 8:
        return list(budgets)
    keep = {budgets[0], budgets[-1]} | {b for b in budgets if b & (b - 1) == 0}
    return sorted(keep)


def held_out_scores(
    learner: InContextLearner,
    family: data.TaskFamily,
    length: int,
    num: int = 256,
    others: dict[str, data.TaskFamily] | None = None,
):
    """Metric at a few budgets on tasks outside training (unseen, or fresh: never biased),
    with `loss`, the training loss over every position, and the same on each of `others` as
    NAME/metric: a cheap probe, on the same sequences every time."""
    shown = sorted({1, length // 4, length // 2, length - 1})
    probes = {"": family, **{f"{name}/": fam for name, fam in (others or {}).items()}}
    batches = {
        prefix: fam.sample(
            jax.random.key(12345), num, length, "unseen" if fam.num_tasks is not None else "all"
        )
        for prefix, fam in probes.items()
    }

    @jax.jit
    def scores(theta):
        out = {}
        for prefix, batch in batches.items():
            pred = learner.apply(theta, batch.x, batch.y)
            if learner.num_classes is None:
                per = jnp.mean((pred - batch.y) ** 2, 0)
                out |= {f"{prefix}mse@{k}": per[k] for k in shown}
                out[f"{prefix}loss"] = jnp.mean(per)
            else:
                per = jnp.mean(jnp.argmax(pred, -1) == batch.y, 0)
                out |= {f"{prefix}acc@{k}": per[k] for k in shown}
                nll = -jnp.take_along_axis(jax.nn.log_softmax(pred), batch.y[..., None], -1)
                out[f"{prefix}loss"] = jnp.mean(nll)
        return out

    return lambda theta: {k: float(v) for k, v in scores(theta).items()}

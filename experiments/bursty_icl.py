"""Issue 17, item 4: in-context versus in-weights learning over training (Chan et al. 2022,
"Data Distributional Properties Drive Emergent In-Context Learning in Transformers"; Singh et
al. 2023, "The Transient Nature of Emergent In-Context Learning").

    metalearn sweep bursty_icl --out sweeps/bursty_icl

A transformer reads 8 context examples and a query from the `bursty` family: 12800 synthetic
Gaussian classes (32-d prototypes, within-class noise 0.5), Zipf-distributed (exponent 1),
each with a label (of 32) fixed for the whole training; a bursty sequence has 3 context
examples of the query's class and 5 of one other class; 6000 steps of 128 sequences. Two
evaluators are logged every 250 steps, on the same 256 sequences each time, at the query (the
last position):

- `fewshot`: held-out classes with two fresh labels per sequence, 3 shots of the query's class
  in the context: only in-context learning answers it (chance 0.5 between the two labels seen,
  1/32 otherwise);
- `absent`: training classes, the query's class never in the context: only what the weights
  learned answers it (chance 1/32).

The sweep compares bursty (0.9) with iid (0) training sequences: Chan et al. find in-context
learning needs bursty training data, and in-weights learning needs the non-bursty part; Singh
et al. find in-context learning can fade with longer training as in-weights learning takes
over. The report plots both evaluators against the training step (training.png in each
point); docs/studies/bursty_icl.md has the measured run.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from metalearn import data
from metalearn.core.errors import UserError
from metalearn.data.bursty import Bursty
from metalearn.experiments.icl_study import TRAIN, EvalConfig, ICLConfig
from metalearn.icl.learner import ModelConfig
from metalearn.meta.evaluate import Curves
from metalearn.meta.experiment import Setup
from metalearn.meta.logs import read_metrics
from metalearn.meta.loop import LoopConfig
from metalearn.meta.optim import OptimConfig
from metalearn.meta.results import plot_training

EVALUATORS = ("fewshot", "absent")  # the bursty family's evaluation modes


@dataclasses.dataclass(frozen=True)
class Config(ICLConfig):
    # many rare classes and within-class noise make in-weights learning slow, which is when
    # Chan et al. see in-context learning emerge
    family: str = "bursty:classes=12800,noise=0.5,zipf=1,burstiness=0.9"
    length: int = 9
    batch_size: int = 128
    model: ModelConfig = ModelConfig(depth=2, width=64, heads=4)
    optim: OptimConfig = OptimConfig(lr=1e-3, warmup=200, eps=1e-10)
    loop: LoopConfig = LoopConfig(steps=6000, log_every=100, eval_every=250, checkpoint_every=2000)
    # the training family and its two evaluators are added to eval.families and eval.periodic
    eval: EvalConfig = EvalConfig(budgets=(0, 4, 8), sequences=2000, families=())

    def setup(self) -> Setup:
        family = data.from_spec(self.family)
        if not isinstance(family, Bursty) or family.mode != "train":
            raise UserError(f"family must be a bursty family in mode train, got {self.family!r}")
        evaluators = {m: dataclasses.replace(family, mode=m).spec for m in EVALUATORS}
        ev = self.eval
        full = dataclasses.replace(
            self,
            eval=dataclasses.replace(
                ev,
                families=(TRAIN, *evaluators.values(), *ev.families),
                periodic=(*(f"{m}={s}" for m, s in evaluators.items()), *ev.periodic),
            ),
        )
        setup = ICLConfig.setup(full)

        def report(theta, run_dir: Path, name: str) -> Curves:
            curves = setup.report(theta, run_dir, name)
            full.plot_training(run_dir)
            return curves

        return dataclasses.replace(setup, report=report)

    def plot_training(self, run_dir: Path) -> None:
        """training.png: every periodic evaluator's accuracy at the query over training."""
        query = self.length - 1
        keys = [f"eval/{name}/acc@{query}" for name in self.periodic_families()]
        records = read_metrics(run_dir / "metrics.jsonl")
        if any(k in r for r in records for k in keys):
            plot_training(records, keys, run_dir / "training.png", title=self.family)


SWEEP = {"grid": {"family.burstiness": [0.9, 0.0]}, "seeds": 1}

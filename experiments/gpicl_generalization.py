"""Issue 17, item 1: meta-generalization across datasets (Kirsch et al. 2022, GPICL, Table 1).

    metalearn sweep gpicl_generalization --out sweeps/gpicl_generalization

Every learner reads sequences of 100 examples of one task: a dataset's images, brought to
one input size (grayscale, 28 x 28) and z-normalized per dataset, then randomly projected to
32 dimensions with the 10 labels permuted (GPICL's input treatment, `projected:...,size=28`).
The sequence models meta-train on MNIST tasks only (its training split, a fresh projection
per sequence); the table is accuracy after 99 examples on unseen tasks of MNIST (test
split), Fashion-MNIST, CIFAR-10 and GPICL's Random, and of KMNIST and SVHN where their data
can be loaded (skipped with a line otherwise).

The sweep's points are the table's trained rows (`variant`): the transformer (token shift),
an LSTM and fast weights of about its parameter count, and `lopt`, a learned optimizer
(MLPLOpt, meta-trained with NRES as `lopt_mlp`, on digits MLPs) that trains an MLP on the
examples seen. The untrained rows - kNN and logistic regression trained by SGD and by Adam,
learning rates tuned on separate tasks of each dataset (GPICL's SGD row) - are evaluated once,
in the transformer's point, on the same sequences. At the end the sweep prints the table
(`metalearn table DIR` prints it again); docs/studies/gpicl_generalization.md has the measured
run beside the paper's numbers.
"""

from __future__ import annotations

import dataclasses

from metalearn.core.errors import UserError
from metalearn.experiments import lopt_mlp
from metalearn.experiments.icl_study import EvalConfig, ICLConfig
from metalearn.icl.learner import ModelConfig
from metalearn.meta.experiment import EvalDefaults, Setup
from metalearn.meta.loop import LoopConfig
from metalearn.meta.optim import OptimConfig

INPUT = "size=28,dim={dim}"  # every dataset: grayscale 28 x 28, then a random projection

# name -> the sequence model of that row; `lopt` is the learned optimizer's row
VARIANTS: dict[str, ModelConfig] = {
    "transformer": ModelConfig(kind="transformer", depth=2, width=64, heads=4),
    "lstm": ModelConfig(kind="lstm", depth=2, width=84),
    "fast_weights": ModelConfig(kind="fast_weights", depth=2, width=64, heads=1),
}
LOPT = "lopt"
# the rows that need no meta-training; evaluated in the transformer's point only
BASELINES = ("knn", "logistic_sgd", "logistic_adam")


@dataclasses.dataclass(frozen=True)
class Config(ICLConfig):
    family: str = "projected:base=mnist,size=28,dim=32"
    length: int = 100
    batch_size: int = 64
    model: ModelConfig = VARIANTS["transformer"]
    optim: OptimConfig = OptimConfig(lr=3e-3, warmup=200, eps=1e-10)
    loop: LoopConfig = LoopConfig(steps=3000, log_every=100, eval_every=0, checkpoint_every=1000)
    eval: EvalConfig = EvalConfig(
        families=(
            f"projected:base=mnist,{INPUT},split=test",
            f"projected:base=fashion_mnist,{INPUT},split=test",
            f"projected:base=cifar10,{INPUT},split=test",
            "random:dim={dim},num_classes={num_classes},items=10",
        ),
        optional=(
            f"projected:base=kmnist,{INPUT},split=test",
            f"projected:base=svhn,{INPUT},split=test",
        ),
        baselines=BASELINES,
        budgets=(0, 1, 2, 4, 8, 16, 32, 64, 99),
        sequences=1000,
    )
    # one of VARIANTS (replacing `model`'s architecture, keeping `model.shift`) or `lopt`;
    # empty: `model` as given
    variant: str = ""
    # the learned optimizer's meta-training when variant=lopt
    lopt: lopt_mlp.Config = lopt_mlp.Config()

    def setup(self) -> Setup:
        if self.variant == LOPT:
            return self._lopt_setup()
        if self.variant:
            return self.resolved().setup()
        return super().setup()

    def resolved(self) -> Config:
        """The config a model variant trains: its architecture in `model` (keeping
        `model.shift`), and the baselines only in the transformer's point, since they do not
        depend on the model."""
        if self.variant not in VARIANTS:
            allowed = ", ".join([*VARIANTS, LOPT])
            raise UserError(f"variant must be one of {allowed}, got {self.variant!r}")
        model = dataclasses.replace(VARIANTS[self.variant], shift=self.model.shift)
        baselines = self.eval.baselines if self.variant == "transformer" else ()
        return dataclasses.replace(
            self,
            model=model,
            variant="",
            eval=dataclasses.replace(self.eval, baselines=baselines, reference=""),
        )

    def _lopt_setup(self) -> Setup:
        """The learned optimizer's meta-training; its report is this table's, the optimizer
        training an MLP on the examples seen."""
        inner = self.lopt.setup()
        table = dataclasses.replace(
            self, eval=dataclasses.replace(self.eval, baselines=(), reference="", distances=())
        )

        def report(theta, run_dir, name):
            return table.report(inner.learner(theta, name), run_dir, name)

        return dataclasses.replace(
            inner,
            report=report,
            eval_defaults=EvalDefaults(
                family=self.family, examples=self.length, steps=self.lopt.horizon
            ),
        )


SWEEP = {
    "grid": {"variant": [*VARIANTS, LOPT]},
    "seeds": 1,
    "table": {"metric": "accuracy", "budget": 99},
}

"""Issue 17, item 2: the loss plateau and what shortens it (Kirsch et al. 2022, GPICL, Sec. 4).

    metalearn sweep gpicl_plateau --out sweeps/gpicl_plateau
    metalearn plot sweeps/gpicl_plateau --logged loss,eval/loss --smooth 4
    # the same grid with the token shift, whose plateau ends within the run:
    metalearn sweep gpicl_plateau --set model.shift=true --grid family.bias=0,0.2 \
        --out sweeps/gpicl_plateau_shift
    # Adam's epsilon, with the shift, at one batch size and no bias:
    metalearn sweep gpicl_plateau --set model.shift=true --grid optim.eps=1e-4,1e-8,1e-12,1e-16 \
        --grid batch_size=64 --grid family.bias=0 --out sweeps/gpicl_plateau_eps

GPICL's plain transformer (no token shift) meta-trained on study 2's family with fresh tasks
(random 16-d projections of 8x8 digits, permuted labels, sequences of 25) sits on a loss
plateau at ln 10 before it learns in context. The plateau length is the first logged step
whose loss is at most 0.9 x the first logged loss (`meta.logs.plateau_length`; every 25
steps; empty when the loss never gets there), measured twice: on the training loss
(`plateau_steps`) and on the loss over 256 fixed sequences of fresh, unbiased tasks
(`eval_plateau_steps`, from `eval/loss`): with a bias, the training loss also falls by
memorizing the one fixed task. GPICL finds larger meta-batches and a biased task
distribution (`bias`: that fraction of each batch's sequences on one fixed task) shorten it.
The grid: meta-batch sizes 16 ... 256 by bias 0, 0.05 and 0.2, one seed each;
docs/studies/gpicl_plateau.md has the measured run.
"""

from __future__ import annotations

import dataclasses

from metalearn.experiments.gpicl_transition import Config as TransitionConfig
from metalearn.experiments.icl_study import TRAIN, EvalConfig
from metalearn.icl.learner import ModelConfig
from metalearn.meta.loop import LoopConfig


@dataclasses.dataclass(frozen=True)
class Config(TransitionConfig):
    family: str = "projected:base=digits,dim=16"
    model: ModelConfig = ModelConfig(depth=2, width=32, heads=4, shift=False)
    loop: LoopConfig = LoopConfig(steps=4000, log_every=25, eval_every=25, checkpoint_every=1000)
    eval: EvalConfig = EvalConfig(families=(TRAIN,), budgets=(0, 1, 2, 4, 8, 16, 24), sequences=500)


SWEEP = {
    "grid": {"batch_size": [16, 32, 64, 128, 256], "family.bias": [0.0, 0.05, 0.2]},
    "seeds": 1,
}

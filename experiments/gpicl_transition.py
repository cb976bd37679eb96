"""Study 2: the transition from memorization to learning-to-learn (Kirsch et al. 2022, GPICL,
Figs. 2-5).

    metalearn sweep gpicl_transition --out sweeps/gpicl_transition

A transformer meta-trained to classify random 16-d projections of scikit-learn's 8x8 digits
with permuted labels, the tasks from a finite pool of 2^0 ... 2^16 tasks and unlimited, at
three model widths. Every point reports accuracy on its pool's tasks ('seen') and on tasks
outside it ('unseen') at each budget; `metalearn transitions` (run at the end of the sweep)
labels each point with GPICL's regimes from the numbers - instance memorization (no gain
within the sequence beyond 2 standard errors, on seen or unseen tasks), task memorization
(seen gains, unseen do not), learning-to-learn (unseen gain and are within 2 standard errors
of seen) or, between the last two, transition - and gives the threshold pool size per width.

The token shift (icl/transformer.py) is on by default; GPICL's plain transformer is
`--set model.shift=false`. Scale chosen to fit 90 minutes on 2 CPU cores; see
docs/studies/gpicl_transition.md for the command, figure and numbers.
"""

from __future__ import annotations

import dataclasses

from metalearn.experiments.icl_study import TRAIN, EvalConfig, ICLConfig
from metalearn.icl.learner import ModelConfig
from metalearn.meta.loop import LoopConfig
from metalearn.meta.optim import OptimConfig


@dataclasses.dataclass(frozen=True)
class Config(ICLConfig):
    family: str = "projected:base=digits,dim=16,num_tasks=256"
    length: int = 25
    batch_size: int = 64
    model: ModelConfig = ModelConfig(depth=2, width=32, heads=4)
    optim: OptimConfig = OptimConfig(lr=3e-3, warmup=100, eps=1e-10)
    loop: LoopConfig = LoopConfig(steps=1500, log_every=100, eval_every=0, checkpoint_every=750)
    eval: EvalConfig = EvalConfig(
        families=(TRAIN,),
        budgets=(0, 1, 2, 4, 8, 16, 24),
        sequences=1000,
    )


SWEEP = {
    "grid": {"family.num_tasks": "2**0..2**16,none", "model.width": [16, 32, 64]},
    "seeds": 1,
    # the 17 finite pools of one width train as one batched model (meta.batch)
    "batch": 17,
    "analysis": {"kind": "regimes", "over": "family.num_tasks", "by": ["model.width"]},
}

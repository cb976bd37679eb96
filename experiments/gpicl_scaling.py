"""Study 3: predictable scaling, in miniature (the method of the GPT-4 technical report).

    metalearn sweep gpicl_scaling --out sweeps/gpicl_scaling
    metalearn fit sweeps/gpicl_scaling --x flops --y loss --holdout largest

Study 2's setting with fresh tasks for every sequence, at six model widths and three seeds,
trained twice as long (3000 steps). The widths start at 40 and the steps are doubled because
of GPICL's loss plateau: in study 2 (1500 steps) a width-16 model never left it and width 32
only just did, and in a first try of this study at 1500 steps one of three width-40 seeds was
still on it at the end; a power law in compute does not describe a loss that stays at ln 10
until some size or some luck.
The sweep's table has each point's training FLOPs (T (6N + 12 L T d) per sequence, as
`metalearn bench icl` counts them, times the batch and the steps) and final training loss;
`metalearn fit` fits L(C) = a C^-b + c to all but the largest width and predicts that one,
with a bootstrap interval over seeds. See docs/studies/gpicl_scaling.md.
"""

from __future__ import annotations

import dataclasses

from metalearn.experiments.gpicl_transition import Config as TransitionConfig
from metalearn.meta.loop import LoopConfig


@dataclasses.dataclass(frozen=True)
class Config(TransitionConfig):
    family: str = "projected:base=digits,dim=16"
    loop: LoopConfig = LoopConfig(steps=3000, log_every=100, eval_every=0, checkpoint_every=1000)


SWEEP = {"grid": {"model.width": [40, 48, 56, 64, 80, 96]}, "seeds": 3}

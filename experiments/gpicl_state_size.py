"""Issue 17, item 3: state size, not parameter count (Kirsch et al. 2022, GPICL, Sec. 5).

    metalearn sweep gpicl_state_size --out sweeps/gpicl_state_size

Six sequence models of about the same parameter count (27.6k-28.3k), all with the token
shift, meta-trained on study 2's task family with fresh tasks (random 16-d projections of 8x8
digits, permuted labels, sequences of 25): an LSTM (width 40), fast weights (width 32, the
delta-rule matrix memory of `icl/fast_weights.py`) with 8, 4, 2 and 1 heads, and the
transformer of study 2 (width 32). Their states after 25 examples (`ModelConfig.state_size`):
160, 256, 512, 1024, 2048 and 3200 numbers. GPICL's finding is that in-context accuracy
follows the state size, not the parameter count. `metalearn plot sweeps/gpicl_state_size --x
variant` draws accuracy on unseen tasks against the variant; docs/studies/gpicl_state_size.md
has the measured run. `--set model.shift=false` drops the shift from every variant (GPICL's
plain models).
"""

from __future__ import annotations

import dataclasses

from metalearn.core.errors import UserError
from metalearn.experiments.gpicl_transition import Config as TransitionConfig
from metalearn.icl.learner import ModelConfig
from metalearn.meta.experiment import Setup
from metalearn.meta.loop import LoopConfig

# name -> architecture, ordered by state size; parameter counts within 3% of each other
# (with the shift; `model.shift` is applied to the variant)
VARIANTS: dict[str, ModelConfig] = {
    "lstm": ModelConfig(kind="lstm", depth=2, width=40),
    "fw8": ModelConfig(kind="fast_weights", depth=2, width=32, heads=8),
    "fw4": ModelConfig(kind="fast_weights", depth=2, width=32, heads=4),
    "fw2": ModelConfig(kind="fast_weights", depth=2, width=32, heads=2),
    "fw1": ModelConfig(kind="fast_weights", depth=2, width=32, heads=1),
    "transformer": ModelConfig(kind="transformer", depth=2, width=32, heads=4),
}


@dataclasses.dataclass(frozen=True)
class Config(TransitionConfig):
    family: str = "projected:base=digits,dim=16"
    loop: LoopConfig = LoopConfig(steps=3000, log_every=100, eval_every=0, checkpoint_every=1000)
    # one of VARIANTS, replacing `model`; empty: `model` as given
    variant: str = ""

    def setup(self) -> Setup:
        if not self.variant:
            return super().setup()
        if self.variant not in VARIANTS:
            raise UserError(f"variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}")
        model = dataclasses.replace(VARIANTS[self.variant], shift=self.model.shift)
        return dataclasses.replace(self, model=model, variant="").setup()


SWEEP = {"grid": {"variant": list(VARIANTS)}, "seeds": 2}

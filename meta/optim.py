"""The outer optimizer: Adam(W) with linear warmup, cosine decay and gradient clipping."""

from __future__ import annotations

import dataclasses

import optax

from metalearn.core.errors import UserError


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """Outer-loop optimizer settings: Adam(W) by default, or plain SGD (`kind="sgd"`).

    A small `eps` matters for meta-training transformers: GPICL (sec. 4.4) finds Adam's default
    eps lets updates vanish on the loss plateau, where gradients are tiny.
    """

    kind: str = "adam"
    lr: float = 1e-3
    warmup: int = 100
    end_lr_ratio: float = 0.1
    clip: float = 1.0
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("adam", "sgd"):
            raise UserError(f"optim.kind must be adam or sgd, got {self.kind!r}")
        if not self.lr > 0 or not self.eps > 0:
            raise UserError(
                f"optim.lr and optim.eps must be positive, got {self.lr} and {self.eps}"
            )
        if self.warmup < 0 or self.clip < 0 or self.weight_decay < 0:
            raise UserError(
                f"optim.warmup, optim.clip and optim.weight_decay must be >= 0, got "
                f"{self.warmup}, {self.clip}, {self.weight_decay}"
            )

    def make(self, steps: int) -> optax.GradientTransformation:
        schedule = self.schedule(steps)
        if self.kind == "sgd":
            inner = optax.chain(optax.add_decayed_weights(self.weight_decay), optax.sgd(schedule))
        else:
            inner = optax.adamw(
                schedule, self.b1, self.b2, self.eps, weight_decay=self.weight_decay
            )
        if self.clip > 0:
            return optax.chain(optax.clip_by_global_norm(self.clip), inner)
        return inner

    def schedule(self, steps: int) -> optax.Schedule:
        warmup = min(self.warmup, max(steps - 1, 0))
        return optax.warmup_cosine_decay_schedule(
            0.0, self.lr, warmup, max(steps, warmup + 1), end_value=self.lr * self.end_lr_ratio
        )

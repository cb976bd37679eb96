"""The learned-optimizer interface: meta-parameters in, an optax transformation out."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import optax

Theta = Any


class LearnedOptimizer(Protocol):
    """An optimizer with meta-parameters `theta`.

    `optimizer(theta)` is an `optax.GradientTransformationExtraArgs`: it drops into any optax
    loop (and flax's `nnx.Optimizer`); the current loss may arrive as the keyword `loss`.
    Its `init(params)` must not depend on theta (a truncated unroll starts inner training
    before theta is known). It is not jitted inside: build it within your own jitted step,
    with theta an argument, and one compiled step serves every theta. Its state is float32
    whatever the parameters' dtype and keeps its types from step to step (`lax.scan` works).
    """

    name: str

    def init(self, key: jax.Array) -> Theta: ...

    def optimizer(self, theta: Theta) -> optax.GradientTransformationExtraArgs: ...


@dataclasses.dataclass(frozen=True)
class HandDesigned:
    """Any optax optimizer in the learned-optimizer slot. Its one meta-parameter is its
    learning rate, `{"lr": lr}`, so a grid search (or ES) over it reuses one compiled program.

    Example: `HandDesigned("adam", optax.adam, lr=1e-3)`.
    """

    name: str
    make: Callable[[float], optax.GradientTransformation]
    lr: float = 1e-3

    def init(self, key: jax.Array) -> Theta:
        del key
        return {"lr": jnp.asarray(self.lr, jnp.float32)}

    def optimizer(self, theta: Theta) -> optax.GradientTransformationExtraArgs:
        lr = self.lr if theta is None else theta["lr"]
        return optax.with_extra_args_support(self.make(lr))


HAND_DESIGNED: dict[str, Callable[[float], optax.GradientTransformation]] = {
    "adam": optax.adam,
    "sgd": optax.sgd,
    "momentum": lambda lr: optax.sgd(lr, momentum=0.9),
    "rmsprop": optax.rmsprop,
    "adamw": optax.adamw,
    "lion": optax.lion,
}

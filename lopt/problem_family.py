"""A distribution over inner problems: task family, model kind, sizes and batch size drawn
from a key, so a learned optimizer can be meta-trained on many architectures, not one.

VeLO (Metz et al. 2022, sec. 3) meta-trains on thousands of sampled tasks; here every draw
fixes shapes, so each sampled problem compiles once and joins the mixture of training problems
(what changes per episode without new shapes - task, init, rescaling, batch - stays in
`InnerProblem`).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np

from metalearn import data
from metalearn.core.errors import UserError
from metalearn.lopt.models import MLP, ConvNet, InnerModel, PatchTransformer
from metalearn.lopt.problems import InnerProblem

KINDS = ("mlp", "conv", "transformer")
IMAGE_KINDS = ("conv", "transformer")  # need a family with an image shape


@dataclasses.dataclass(frozen=True)
class ProblemFamily:
    """Each draw: a family of `families`, a model kind of `kinds`, a width log-uniform in
    `widths` (rounded to even), a depth uniform in `depths`, a batch size log-uniform in
    `batches`. Convolution and transformer models draw only among image families."""

    families: tuple[str, ...] = ("projected:base=digits,dim=16", "images:base=digits")
    kinds: tuple[str, ...] = KINDS
    widths: tuple[int, ...] = (8, 128)  # (low, high)
    depths: tuple[int, ...] = (1, 2)
    batches: tuple[int, ...] = (32, 128)

    def __post_init__(self) -> None:
        if not self.families:
            raise UserError("a problem family needs at least one task family")
        bad = [k for k in self.kinds if k not in KINDS]
        if bad or not self.kinds:
            raise UserError(f"kinds must be among {', '.join(KINDS)}, got {self.kinds}")
        for name in ("widths", "depths", "batches"):
            lo_hi = getattr(self, name)
            if len(lo_hi) != 2 or not 1 <= lo_hi[0] <= lo_hi[1]:
                raise UserError(f"{name} must be (low, high) with 1 <= low <= high, got {lo_hi}")

    def sample(self, key: jax.Array, **augment) -> InnerProblem:
        """One inner problem; `augment` (rescale, min_batch) as in `InnerProblem.augmented`."""
        k_fam, k_kind, k_width, k_depth, k_batch = jax.random.split(key, 5)
        kind = self.kinds[int(jax.random.randint(k_kind, (), 0, len(self.kinds)))]
        families = self._image_families() if kind in IMAGE_KINDS else self.families
        if not families:
            raise UserError(
                f"model kind {kind!r} needs an image family (e.g. images:base=digits); "
                f"none of {', '.join(self.families)} has images"
            )
        family = families[int(jax.random.randint(k_fam, (), 0, len(families)))]
        width = 2 * max(1, round(_log_uniform(k_width, self.widths) / 2))
        depth = int(jax.random.randint(k_depth, (), self.depths[0], self.depths[1] + 1))
        batch = round(_log_uniform(k_batch, self.batches))
        return InnerProblem(family, _model(kind, width, depth), batch).augmented(**augment)

    def sample_many(self, key: jax.Array, num: int, **augment) -> list[InnerProblem]:
        """`num` problems, draw i from fold_in(key, i)."""
        return [self.sample(jax.random.fold_in(key, i), **augment) for i in range(num)]

    def _image_families(self) -> tuple[str, ...]:
        return tuple(f for f in self.families if hasattr(data.from_spec(f), "image_shape"))


def _log_uniform(key: jax.Array, lo_hi: tuple[int, ...]) -> float:
    lo, hi = np.log(lo_hi[0]), np.log(lo_hi[1])
    return float(math.exp(float(jax.random.uniform(key, (), minval=lo, maxval=hi))))


def _model(kind: str, width: int, depth: int) -> InnerModel:
    if kind == "mlp":
        return MLP((width,) * depth)
    if kind == "conv":
        return ConvNet(tuple(width * 2**i for i in range(depth)))
    return PatchTransformer(width=width, depth=depth)

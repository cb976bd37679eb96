"""Mixed precision (meta/precision.py): bfloat16 products with float32 accumulation, forward
and backward, within bfloat16's tolerance of float32."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metalearn import data
from metalearn.core.errors import UserError
from metalearn.icl.learner import InContextLearner, ModelConfig
from metalearn.meta.precision import mixed_matmul


def rel(a, b) -> float:
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


def test_every_product_of_the_step_takes_bfloat16_operands():
    x = jax.random.normal(jax.random.key(0), (3, 5, 16))
    w = jax.random.normal(jax.random.key(1), (16, 8))

    def loss(x, w, mm):
        return jnp.sum(jnp.sin(mm(x, w)))

    exact = jax.grad(loss, argnums=(0, 1))(x, w, jnp.matmul)
    mixed = jax.grad(loss, argnums=(0, 1))(x, w, mixed_matmul)
    for e, m in zip(exact, mixed, strict=True):
        assert m.dtype == jnp.float32 and m.shape == e.shape
        assert rel(m, e) < 2e-2  # bfloat16 keeps 8 bits of mantissa
    jaxpr = jax.make_jaxpr(jax.grad(loss, argnums=(0, 1)), static_argnums=2)(x, w, mixed_matmul)
    dots = [e for e in _eqns(jaxpr.jaxpr) if e.primitive.name == "dot_general"]
    assert len(dots) == 3  # forward, and the two products of the backward pass
    for eqn in dots:
        assert [v.aval.dtype for v in eqn.invars] == [jnp.bfloat16, jnp.bfloat16]
        assert eqn.outvars[0].aval.dtype == jnp.float32


def _eqns(jaxpr):
    """Every equation, those of nested jaxprs (pjit, custom rules) included."""
    for eqn in jaxpr.eqns:
        yield eqn
        for param in eqn.params.values():
            for sub in param if isinstance(param, list | tuple) else [param]:
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from _eqns(inner)


def test_bfloat16_transformer_stays_within_tolerance_of_float32():
    fam = data.from_spec("linear_regression:dim=4,noise=0.1")
    b = fam.sample(jax.random.key(1), 8, 8)
    out = {}
    for dtype in ("float32", "bfloat16"):
        model = ModelConfig(depth=2, width=32, heads=2, matmul_dtype=dtype)
        lr = InContextLearner.for_family(model, fam, 8)
        theta = lr.init(jax.random.key(0))
        out[dtype] = jax.value_and_grad(lambda t, lr=lr: lr.loss(t, b)[0])(theta)
        assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(out[dtype][1]))
    (l32, g32), (l16, g16) = out["float32"], out["bfloat16"]
    np.testing.assert_allclose(l16, l32, rtol=1e-3)
    leaves32, leaves16 = jax.tree_util.tree_leaves(g32), jax.tree_util.tree_leaves(g16)
    worst = max(rel(a, b) for a, b in zip(leaves16, leaves32, strict=True))
    assert 0 < worst < 5e-2  # different (bfloat16 products), and close


def test_bad_matmul_dtype_is_one_line():
    with pytest.raises(UserError, match="model.matmul_dtype must be one of float32, bfloat16"):
        ModelConfig(matmul_dtype="float16")
    with pytest.raises(UserError, match="needs model.kind transformer"):
        ModelConfig(kind="lstm", matmul_dtype="bfloat16")

"""Mixed precision for dense layers: bfloat16 operands, float32 accumulation and parameters.

Measured on an Intel Xeon with AMX (Emerald Rapids, jax 0.10.2, docs/performance.md): XLA:CPU
multiplies bfloat16 matrices into a float32 result (`preferred_element_type=float32`) 3-5x
faster than float32 ones, while a bfloat16 -> bfloat16 product is converted to float32 and runs
slower than float32. JAX's own backward pass of a mixed product multiplies the float32
cotangent in float32, so `mixed_matmul` defines its own: every product of the forward and
backward passes takes bfloat16 operands and accumulates in float32. Parameters, their
gradients and the optimizer state stay float32 (Micikevicius et al. 2018, *Mixed Precision
Training*).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

DTYPES = ("float32", "bfloat16")


def _product(a: jax.Array, b: jax.Array, spec: str) -> jax.Array:
    return jnp.einsum(
        spec, a.astype(jnp.bfloat16), b.astype(jnp.bfloat16), preferred_element_type=jnp.float32
    )


@jax.custom_vjp
def mixed_matmul(x: jax.Array, w: jax.Array) -> jax.Array:
    """x [..., I] @ w [I, O] with bfloat16 operands and a float32 result."""
    return _product(x, w, "...i,io->...o")


def _forward(x: jax.Array, w: jax.Array):
    # the bfloat16 copies are what the backward products read; empty arrays carry the dtypes
    dtypes = (jnp.zeros((0,), x.dtype), jnp.zeros((0,), w.dtype))
    return mixed_matmul(x, w), (x.astype(jnp.bfloat16), w.astype(jnp.bfloat16), dtypes)


def _backward(res, ct: jax.Array):
    x, w, (x_like, w_like) = res
    dx = _product(ct, w, "...o,io->...i").astype(x_like.dtype)
    dw = _product(x, ct, "...i,...o->io").astype(w_like.dtype)
    return dx, dw


mixed_matmul.defvjp(_forward, _backward)


def mixed_dot_general(
    lhs: jax.Array,
    rhs: jax.Array,
    dimension_numbers: Any,
    precision: Any = None,
    preferred_element_type: Any = None,
    **unused: Any,
) -> jax.Array:
    """A `dot_general` for `flax.nnx.Linear(dot_general=...)`: its product (the last axis of
    the input against a 2-d kernel's first) through `mixed_matmul`. Precision settings (and
    flax's output sharding) do not apply: the operands are bfloat16, the result float32."""
    del precision, preferred_element_type, unused
    (contract_l, contract_r), (batch_l, batch_r) = dimension_numbers
    if (
        rhs.ndim != 2
        or tuple(contract_l) != (lhs.ndim - 1,)
        or tuple(contract_r) != (0,)
        or batch_l
        or batch_r
    ):
        raise ValueError(
            f"mixed_dot_general takes a dense layer's product, got {dimension_numbers}"
        )
    return mixed_matmul(lhs, rhs)

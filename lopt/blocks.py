"""Per-parameter networks over big tensors, a cache-sized block of rows at a time.

Building every per-parameter feature of a 1M-parameter tensor and then running the MLP streams
[N, features] and [N, hidden] arrays through memory at every layer. Instead, features are
described by the arrays they are computed from - full-size ones (gradient, momenta) and
broadcast ones (Adafactor's row and column statistics, size 1 along some axes) - and are built,
normalized and fed through the MLP for a block of rows along axis 0 at a time (`lax.map`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

BLOCK_FLOATS = 2**16  # parameters per block


def feature_scales(groups: Sequence[jax.Array], ndim: int) -> list[jax.Array]:
    """1 / root mean square over the tensor's `ndim` axes of each feature group [..., c]
    (broadcast axes count as repeated, as a mean over size-1 axes is the same)."""
    axes = tuple(range(ndim))
    return [jax.lax.rsqrt(1e-5 + jnp.mean(g * g, axis=axes)) for g in groups]


def row_blocks(
    fn: Callable[..., jax.Array], sources: Sequence[jax.Array], shape: tuple[int, ...]
) -> jax.Array:
    """fn(*sources) -> [*shape, ...], evaluated on blocks of rows (axis 0) of a tensor of
    `shape`. Sources with a leading axis of shape[0] are sliced; those of size 1 along axis 0
    (broadcast) are passed whole. fn must broadcast its inputs itself. fn may also return a
    pair (per-row output, summary): the summaries of the blocks are summed (padding rows are
    zero in every sliced source, so fn can mask them out with a source of ones)."""
    rows = shape[0]
    per_row = 1
    for s in shape[1:]:
        per_row *= s
    block = max(1, BLOCK_FLOATS // max(per_row, 1))
    if block >= rows:
        return fn(*sources)
    n = -(-rows // block)
    sliced = [s.shape[0] == rows for s in sources]

    def pad(s):
        return jnp.pad(s, [(0, n * block - rows)] + [(0, 0)] * (s.ndim - 1))

    def split(s):
        return pad(s).reshape((n, block) + s.shape[1:])

    stacked = tuple(split(s) for s, cut in zip(sources, sliced, strict=True) if cut)
    whole = [s for s, cut in zip(sources, sliced, strict=True) if not cut]

    def one(parts):
        it, wt = iter(parts), iter(whole)
        return fn(*[next(it) if cut else next(wt) for cut in sliced])

    out = jax.lax.map(one, stacked)
    if isinstance(out, tuple):
        per_row, summary = out
        return per_row.reshape((n * block,) + per_row.shape[2:])[:rows], summary.sum(0)
    return out.reshape((n * block,) + out.shape[2:])[:rows]

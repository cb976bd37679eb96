"""Per-parameter networks over big tensors, at the speed of one fused loop.

A per-parameter learned optimizer normalizes each feature channel by its root mean square over
the tensor and then runs a tiny MLP on every parameter. Written naively, both stream
[N, channels] and [N, hidden] arrays through memory, and XLA:CPU runs matrix products with a
few columns at a fraction of its elementwise speed. Instead:

- `block_sums` builds what a step needs summed over a tensor (the squares of every feature
  channel, for their normalization; other tensor statistics) a cache-sized block of rows at a
  time (`fori_loop`), so each input is read from memory once;
- `per_parameter_mlp` runs the MLP on every parameter. A small MLP (at most `DENSE_ABOVE`
  weights: hidden 4) is unrolled over its units by `elementwise_mlp`: every layer is a sum of
  scalar-weighted arrays, and XLA fuses the features, the normalization and the whole MLP into
  one loop over the parameters that writes nothing but the step. Channels that are row or
  column statistics enter the first layer as partial sums made once at their own size. A
  bigger MLP (hidden 32) runs as matrix products [out, in] @ [in, block] on a cache-sized block
  of rows at a time: on the 784-1024-1024-10 benchmark as fast as the unrolled loop (an update
  of ~65-70 ms either way on a 2-core AVX-512 EPYC), but compiled in 2 s instead of 14 (and
  instead of minutes on the many small tensors of inner problems).

Features are described by the arrays they are computed from: full-size ones (gradient, momenta)
and broadcast ones (Adafactor's row and column statistics, size 1 along some axes).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

BLOCK_FLOATS = 2**16  # parameters per block of the statistics
MATMUL_FLOATS = 2**15  # parameters per block of the matrix products: [32, block] stays in cache
# MLPs of more weights than this run as matrix products: hidden 4 (~100-200 weights) unrolled
# runs PES on a 2,410-parameter MLP ~1.9x faster than as products, and 784-1024-1024-10's
# update ~1.8x faster; hidden 32 (1,728 weights) runs as fast as products and compiles ~6x
# faster
DENSE_ABOVE = 512
# sources -> the per-parameter feature channels, each broadcastable to the tensor's shape
Features = Callable[..., Sequence[jax.Array]]


def _size(shape: Sequence[int]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _rows_per_block(shape: tuple[int, ...], floats: int | None = None) -> int:
    per_row = 1
    for s in shape[1:]:
        per_row *= s
    return max(1, (floats or BLOCK_FLOATS) // max(per_row, 1))


def _row_slicer(sources: Sequence[jax.Array], rows: int):
    """(start, size) -> the sources' rows start..start+size; broadcast sources (size 1 along
    axis 0) whole. Dynamic slices read the inputs in place: reshaping them into blocks would
    copy them whenever the block does not divide the rows."""
    cut = [s.shape[0] == rows for s in sources]

    def rows_of(start, size):
        return [
            jax.lax.dynamic_slice_in_dim(s, start, size) if c else s
            for s, c in zip(sources, cut, strict=True)
        ]

    return rows_of


def block_sums(terms: Features, sources: Sequence[jax.Array], shape: tuple[int, ...]) -> jax.Array:
    """[terms]: the sum over a tensor of `shape` of every array of `terms(*sources)`, each
    broadcast to the tensor's shape. Sources either have the tensor's leading axis or size 1
    there (broadcast). One pass over the sources, a block of rows at a time."""

    def sums(rows, *parts):
        lead = (rows,) + tuple(shape[1:])
        # a broadcast term (row or column statistics) is summed at its own size
        return jnp.stack([jnp.sum(x) * (_size(lead) // x.size) for x in terms(*parts)])

    rows = shape[0]
    block = _rows_per_block(shape)
    if rows < 2 * block:
        return sums(rows, *sources)
    rows_of = _row_slicer(sources, rows)
    total = jax.lax.fori_loop(
        1,
        rows // block,
        lambda i, acc: acc + sums(block, *rows_of(i * block, block)),
        sums(block, *rows_of(0, block)),
    )
    full = rows // block * block
    if full < rows:  # the rows left over, as one smaller block
        total = total + sums(rows - full, *rows_of(full, rows - full))
    return total


def channel_sums(
    features: Features, sources: Sequence[jax.Array], shape: tuple[int, ...]
) -> jax.Array:
    """[channels]: the sum of squares over a tensor of `shape` of every channel of
    `features(*sources)` (see `block_sums`)."""
    return block_sums(lambda *s: [x * x for x in features(*s)], sources, shape)


def channel_scales(
    features: Features, sources: Sequence[jax.Array], shape: tuple[int, ...], eps: float
) -> jax.Array:
    """[channels]: 1 / sqrt(eps + mean square over the tensor) of every channel."""
    n = 1
    for s in shape:
        n *= s
    return jax.lax.rsqrt(eps + channel_sums(features, sources, shape) / max(n, 1))


def split(x: jax.Array) -> list[jax.Array]:
    """The channels of x [..., c]."""
    return [x[..., i] for i in range(x.shape[-1])]


def per_parameter_mlp(
    layers: Sequence[tuple[jax.Array, jax.Array]],
    features: Features,
    sources: Sequence[jax.Array],
    shape: tuple[int, ...],
) -> list[jax.Array]:
    """An MLP (ReLU between layers; one weight [fan_in, fan_out] and bias per layer) applied to
    every parameter of a tensor of `shape`, its input channels `features(*sources)` (sources as
    in `block_sums`): unrolled into one fused loop (`elementwise_mlp`) when it has at most
    `DENSE_ABOVE` weights, else as matrix products a block of rows at a time."""
    shape = tuple(shape)
    if sum(jnp.size(w) for w, _ in layers) <= DENSE_ABOVE:
        return elementwise_mlp(layers, features(*sources), shape)
    rows = shape[0]
    block = _rows_per_block(shape, MATMUL_FLOATS)
    if rows < 2 * block:
        return _dense_mlp_CN(layers, features(*sources), shape)
    n_out = layers[-1][0].shape[1]
    rows_of = _row_slicer(sources, rows)

    def put(outs, start, size):
        lead = (size,) + shape[1:]
        h = jnp.stack(_dense_mlp_CN(layers, features(*rows_of(start, size)), lead))
        return jax.lax.dynamic_update_slice_in_dim(outs, h, start, axis=1)

    outs = jnp.zeros((n_out,) + shape, sources[0].dtype)
    outs = jax.lax.fori_loop(0, rows // block, lambda i, o: put(o, i * block, block), outs)
    full = rows // block * block
    if full < rows:  # the rows left over, as one smaller block
        outs = put(outs, full, rows - full)
    return list(outs)


def _dense_mlp_CN(layers, xs, shape):
    """The MLP as products [out, in] @ [in, N]: with the N parameters last (the long axis),
    blocks of 32k parameters ran ~10-25% faster than as [N, in] @ [in, out]."""
    n = _size(shape)
    h = jnp.stack([jnp.broadcast_to(x, shape).reshape(n) for x in xs])
    for i, (w, b) in enumerate(layers):
        h = w.T @ (jax.nn.relu(h) if i else h) + b[:, None]
    return [x.reshape(shape) for x in h]


def _dense_mlp(layers, xs, shape):
    """The same MLP as matrix products on [..., channels]: the reference, and the backward pass
    (differentiating the unrolled loop would leave XLA one reduction per weight)."""
    h = jnp.stack([jnp.broadcast_to(x, shape) for x in xs], -1)
    for i, (w, b) in enumerate(layers):
        h = (jax.nn.relu(h) if i else h) @ w
        h = h + jnp.broadcast_to(b, h.shape)
    return [h[..., j] for j in range(h.shape[-1])]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def elementwise_mlp(
    layers: Sequence[tuple[jax.Array, jax.Array]],
    xs: Sequence[jax.Array],
    shape: tuple[int, ...],
) -> list[jax.Array]:
    """An MLP (ReLU between layers) applied to every element of a tensor of `shape`, whose input
    channels `xs` broadcast to that shape; one weight [fan_in, fan_out] and bias per layer.
    Unrolled over units so the whole net fuses into one elementwise loop."""
    for i, (w, _) in enumerate(layers):
        fan_in = len(xs) if i == 0 else layers[i - 1][0].shape[1]
        if w.shape[0] != fan_in:
            raise ValueError(f"layer {i} expects {w.shape[0]} inputs, got {fan_in}")
    shape = tuple(shape)
    # channels smaller than the tensor (row or column statistics) enter the first layer
    # through partial sums made once at their own size, not at every parameter
    w0, b0 = layers[0]
    full = [k for k, x in enumerate(xs) if jnp.shape(x) == shape]
    groups: dict[tuple[int, ...], list[int]] = {}
    for k, x in enumerate(xs):
        if jnp.shape(x) != shape:
            groups.setdefault(jnp.shape(x), []).append(k)
    partials = [
        [
            sum((xs[k] * w0[k, j] for k in ks[1:]), xs[ks[0]] * w0[ks[0], j])
            for ks in groups.values()
        ]
        for j in range(w0.shape[1])
    ]
    # the weights and partial sums are computed before the loop: fused into it, XLA:CPU's
    # emitter derives them again at every use (at hidden 32 its compile ran out of memory)
    layers, partials = jax.lax.optimization_barrier((list(layers), partials))
    # a loop over a short last axis (a 1024 x 10 weight) vectorizes badly: such tensors are
    # flattened (elsewhere that would only split the loop into several)
    flat = (-1,) if len(shape) > 1 and shape[-1] < 128 else shape

    def spread(x):
        return jnp.broadcast_to(x, shape).reshape(flat)

    w0, b0 = layers[0]
    h = [
        _sum([spread(xs[k]) * w0[k, j] for k in full] + [spread(x) for x in partials[j]], b0[j])
        for j in range(w0.shape[1])
    ]
    for w, b in layers[1:]:
        h = [jax.nn.relu(x) for x in h]
        h = [_sum([x * w[k, j] for k, x in enumerate(h)], b[j]) for j in range(w.shape[1])]
    return [x.reshape(shape) for x in h]


def _sum(terms: list[jax.Array], start: jax.Array) -> jax.Array:
    """start + sum(terms) as up to four interleaved chains of multiply-adds: a single chain
    leaves the loop waiting on each add's latency (hidden 32 runs ~10% faster)."""
    n = max(1, min(4, len(terms) // 4))
    chains = [sum(terms[n::n], terms[0] + start)]
    chains += [sum(terms[r + n :: n], terms[r]) for r in range(1, n)]
    return sum(chains[1:], chains[0])


def _mlp_fwd(layers, xs, shape):
    return elementwise_mlp(layers, xs, shape), (layers, xs)


def _mlp_bwd(shape, residuals, cotangents):
    layers, xs = residuals
    return jax.vjp(lambda w, x: _dense_mlp(w, x, shape), layers, xs)[1](list(cotangents))


elementwise_mlp.defvjp(_mlp_fwd, _mlp_bwd)


def row_blocks(
    fn: Callable[..., jax.Array], sources: Sequence[jax.Array], shape: tuple[int, ...]
) -> jax.Array:
    """fn(*sources) -> [*shape, ...], evaluated on blocks of rows (axis 0) of a tensor of
    `shape`. Sources with a leading axis of shape[0] are sliced; those of size 1 along axis 0
    (broadcast) are passed whole. fn must broadcast its inputs itself. fn may also return a
    pair (per-row output, summary): the summaries of the blocks are summed (padding rows are
    zero in every sliced source, so fn can mask them out with a source of ones)."""
    rows = shape[0]
    block = _rows_per_block(shape)
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

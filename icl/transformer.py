"""A pre-LN causal transformer over GPICL tokens (flax NNX).

Optional token shift: each token's embedding also sees the previous token through its own
projection (a width-2 causal convolution, as RWKV's token shift or 'smeared keys' in Olsson et
al. 2022). In GPICL's format the label y_j sits in token j+1 while x_j sits in token j; the shift
puts both in one place, so matching x_t against past inputs takes one attention layer instead of
an induction circuit across two, which shortens the loss plateau.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from einops import rearrange
from flax import nnx

from metalearn.icl.tokens import previous
from metalearn.meta.precision import mixed_dot_general, mixed_matmul


class Block(nnx.Module):
    """Pre-LN block: causal self-attention then an MLP, each on a residual branch."""

    def __init__(
        self,
        width: int,
        heads: int,
        mlp_ratio: int,
        depth: int,
        *,
        matmul_dtype: str = "float32",
        rngs: nnx.Rngs,
    ):
        if width % heads:
            raise ValueError(f"width {width} must be divisible by heads {heads}")
        self.heads = heads
        out_init = nnx.initializers.normal(0.02 / (2 * depth) ** 0.5)
        # bfloat16: the dense products in bfloat16 with float32 accumulation
        dense = {"dot_general": mixed_dot_general} if matmul_dtype == "bfloat16" else {}
        self.matmul = mixed_matmul if matmul_dtype == "bfloat16" else jnp.matmul
        self.ln1 = nnx.LayerNorm(width, rngs=rngs)
        # holds q, k and v's parameters; `__call__` multiplies by its thirds with self.matmul
        self.qkv = nnx.Linear(width, 3 * width, rngs=rngs)
        self.proj = nnx.Linear(width, width, kernel_init=out_init, rngs=rngs, **dense)
        self.ln2 = nnx.LayerNorm(width, rngs=rngs)
        self.fc = nnx.Linear(width, mlp_ratio * width, rngs=rngs, **dense)
        self.out = nnx.Linear(mlp_ratio * width, width, kernel_init=out_init, rngs=rngs, **dense)

    def __call__(self, h_BTW: jax.Array) -> jax.Array:
        x_BTW = self.ln1(h_BTW)
        # q, k and v as three products with the thirds of the qkv kernel (same parameters): the
        # backward pass of one product split three ways assembles the [B, T, 3W] cotangent
        # from pads through a transposed copy, ~10% of step (b) of `metalearn bench icl`
        kernel, bias, width = self.qkv.kernel[...], self.qkv.bias[...], x_BTW.shape[-1]
        q_BTNH, k_BTNH, v_BTNH = (
            rearrange(
                self.matmul(x_BTW, kernel[:, i * width : (i + 1) * width])
                + bias[None, None, i * width : (i + 1) * width],
                "b t (n h) -> b t n h",
                n=self.heads,
            )
            for i in range(3)
        )
        att_BTNH = jax.nn.dot_product_attention(q_BTNH, k_BTNH, v_BTNH, is_causal=True)
        h_BTW = h_BTW + self.proj(rearrange(att_BTNH, "b t n h -> b t (n h)"))
        return h_BTW + self.out(jax.nn.gelu(self.fc(self.ln2(h_BTW))))


class Transformer(nnx.Module):
    """Tokens [B, T, token_size] -> outputs [B, T, out_size], causal in T."""

    def __init__(
        self,
        token_size: int,
        out_size: int,
        max_length: int,
        *,
        depth: int = 4,
        width: int = 64,
        heads: int = 2,
        mlp_ratio: int = 4,
        shift: bool = True,
        remat: bool = False,
        matmul_dtype: str = "float32",
        rngs: nnx.Rngs,
    ):
        self.remat = remat
        self.embed = nnx.Linear(token_size, width, rngs=rngs)
        self.embed_prev = (
            nnx.Linear(token_size, width, use_bias=False, rngs=rngs) if shift else None
        )
        self.pos = nnx.Param(nnx.initializers.normal(0.02)(rngs.params(), (max_length, width)))
        self.blocks = nnx.List(
            [
                Block(width, heads, mlp_ratio, depth, matmul_dtype=matmul_dtype, rngs=rngs)
                for _ in range(depth)
            ]
        )
        self.ln_f = nnx.LayerNorm(width, rngs=rngs)
        self.head = nnx.Linear(width, out_size, rngs=rngs)

    def __call__(self, tok_BTK: jax.Array) -> jax.Array:
        h_BTW, _ = run_blocks(self.blocks, embed_tokens(self, tok_BTK), self.remat)
        return self.head(self.ln_f(h_BTW))


def embed_tokens(module: nnx.Module, tok_BTK: jax.Array) -> jax.Array:
    """Tokens to the residual stream through `module`'s `embed`, `pos` and (token shift)
    `embed_prev`: a transformer's, or icl.local's `Embedding`."""
    h_BTW = module.embed(tok_BTK) + module.pos[None, : tok_BTK.shape[1]]
    if module.embed_prev is not None:
        h_BTW = h_BTW + module.embed_prev(previous(tok_BTK))
    return h_BTW


def run_blocks(blocks, h_BTW: jax.Array, remat: bool) -> tuple[jax.Array, list[jax.Array]]:
    """Apply `blocks` in turn: the last output and every block's output. With `remat`, the
    blocks run as one `lax.scan` over their stacked parameters with a `jax.checkpoint`ed body,
    so the backward pass recomputes each block's activations from its input instead of keeping
    them (memory for about one more forward pass; XLA:CPU drops the recomputation of a
    checkpoint outside a loop as common work, but keeps it in a scan)."""
    blocks = list(blocks)
    if not remat or len(blocks) < 2:
        outs = []
        for block in blocks:
            h_BTW = block(h_BTW)
            outs.append(h_BTW)
        return h_BTW, outs
    graph = nnx.split(blocks[0])[0]
    states = [nnx.split(b)[1] for b in blocks]
    stacked = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *states)

    @jax.checkpoint
    def body(h, state):
        h = nnx.merge(graph, state)(h)
        return h, h

    h_BTW, outs_NBTW = jax.lax.scan(body, h_BTW, stacked)
    return h_BTW, list(outs_NBTW)

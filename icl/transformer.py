"""A pre-LN causal transformer over GPICL tokens (flax NNX).

Optional token shift: each token's embedding also sees the previous token through its own
projection (a width-2 causal convolution, as RWKV's token shift or 'smeared keys' in Olsson et
al. 2022). In GPICL's format the label y_j sits in token j+1 while x_j sits in token j; the shift
puts both in one place, so matching x_t against past inputs takes one attention layer instead of
an induction circuit across two, which shortens the loss plateau.
"""

from __future__ import annotations

import jax
from einops import rearrange
from flax import nnx

from metalearn.icl.tokens import previous


class Block(nnx.Module):
    """Pre-LN block: causal self-attention then an MLP, each on a residual branch."""

    def __init__(self, width: int, heads: int, mlp_ratio: int, depth: int, *, rngs: nnx.Rngs):
        if width % heads:
            raise ValueError(f"width {width} must be divisible by heads {heads}")
        self.heads = heads
        out_init = nnx.initializers.normal(0.02 / (2 * depth) ** 0.5)
        self.ln1 = nnx.LayerNorm(width, rngs=rngs)
        self.qkv = nnx.Linear(width, 3 * width, rngs=rngs)
        self.proj = nnx.Linear(width, width, kernel_init=out_init, rngs=rngs)
        self.ln2 = nnx.LayerNorm(width, rngs=rngs)
        self.fc = nnx.Linear(width, mlp_ratio * width, rngs=rngs)
        self.out = nnx.Linear(mlp_ratio * width, width, kernel_init=out_init, rngs=rngs)

    def __call__(self, h_BTW: jax.Array) -> jax.Array:
        qkv = rearrange(self.qkv(self.ln1(h_BTW)), "b t (k n h) -> k b t n h", k=3, n=self.heads)
        att_BTNH = jax.nn.dot_product_attention(qkv[0], qkv[1], qkv[2], is_causal=True)
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
        rngs: nnx.Rngs,
    ):
        self.embed = nnx.Linear(token_size, width, rngs=rngs)
        self.embed_prev = (
            nnx.Linear(token_size, width, use_bias=False, rngs=rngs) if shift else None
        )
        self.pos = nnx.Param(nnx.initializers.normal(0.02)(rngs.params(), (max_length, width)))
        self.blocks = nnx.List(
            [Block(width, heads, mlp_ratio, depth, rngs=rngs) for _ in range(depth)]
        )
        self.ln_f = nnx.LayerNorm(width, rngs=rngs)
        self.head = nnx.Linear(width, out_size, rngs=rngs)

    def __call__(self, tok_BTK: jax.Array) -> jax.Array:
        t = tok_BTK.shape[1]
        h_BTW = self.embed(tok_BTK) + self.pos[None, :t]
        if self.embed_prev is not None:
            h_BTW = h_BTW + self.embed_prev(previous(tok_BTK))
        for block in self.blocks:
            h_BTW = block(h_BTW)
        return self.head(self.ln_f(h_BTW))

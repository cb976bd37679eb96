"""A large-state recurrent model: a transformer whose attention is replaced by fast weights
written with the delta rule (Schlag, Irie & Schmidhuber 2021, "Linear Transformers Are
Secretly Fast Weight Programmers"), GPICL's (Kirsch et al. 2022, Sec. 5) large-state model
class.

Each head keeps a matrix memory S [d, d] (d = width / heads). At token t it reads
S_{t-1} at its normalized key, moves the value stored there towards v_t by a learned rate
beta_t in (0, 1), and answers its query from the updated memory:

    S_t = S_{t-1} + beta_t (v_t - S_{t-1} k_t) k_t^T,    o_t = S_t q_t.

The state is depth * heads * d^2 = depth * width^2 / heads numbers, whatever the sequence
length: at one width (one parameter count) fewer heads mean a larger state, which is the knob
the state-size study turns. A scan over time makes it causal by construction.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from einops import rearrange
from flax import nnx

from metalearn.icl.tokens import previous


def delta_write(s_NDD: jax.Array, k_ND: jax.Array, v_ND: jax.Array, beta_N: jax.Array):
    """Each head's memory after moving what it stores under unit key k towards v by beta."""
    stored_ND = jnp.einsum("nij,nj->ni", s_NDD, k_ND)
    write_ND = beta_N[:, None] * (v_ND - stored_ND)
    return s_NDD + jnp.einsum("ni,nj->nij", write_ND, k_ND)


def read(s_NDD: jax.Array, q_ND: jax.Array) -> jax.Array:
    """Each head's memory read at its query."""
    return jnp.einsum("nij,nj->ni", s_NDD, q_ND)


class FastWeightBlock(nnx.Module):
    """Pre-LN block: a delta-rule fast-weight memory, then an MLP, each on a residual branch."""

    def __init__(self, width: int, heads: int, mlp_ratio: int, depth: int, *, rngs: nnx.Rngs):
        if width % heads:
            raise ValueError(f"width {width} must be divisible by heads {heads}")
        self.heads = heads
        out_init = nnx.initializers.normal(0.02 / (2 * depth) ** 0.5)
        self.ln1 = nnx.LayerNorm(width, rngs=rngs)
        self.qkvb = nnx.Linear(width, 3 * width + heads, rngs=rngs)
        self.proj = nnx.Linear(width, width, kernel_init=out_init, rngs=rngs)
        self.ln2 = nnx.LayerNorm(width, rngs=rngs)
        self.fc = nnx.Linear(width, mlp_ratio * width, rngs=rngs)
        self.out = nnx.Linear(mlp_ratio * width, width, kernel_init=out_init, rngs=rngs)

    def __call__(self, h_BTW: jax.Array) -> jax.Array:
        b, t, w = h_BTW.shape
        n, d = self.heads, w // self.heads
        qkvb = self.qkvb(self.ln1(h_BTW))
        q, k, v = (
            rearrange(qkvb[..., i * w : (i + 1) * w], "b t (n d) -> t b n d", n=n) for i in range(3)
        )
        beta_TBN = jax.nn.sigmoid(rearrange(qkvb[..., 3 * w :], "b t n -> t b n"))
        # unit keys keep the delta rule's step a projection (a stable write)
        k = k / jnp.sqrt(jnp.sum(k**2, -1, keepdims=True) + 1e-6)
        q = q / jnp.sqrt(jnp.sum(q**2, -1, keepdims=True) + 1e-6)

        def step(s_BNDD, inputs):
            q_BND, k_BND, v_BND, beta_BN = inputs
            s_BNDD = jax.vmap(delta_write)(s_BNDD, k_BND, v_BND, beta_BN)
            return s_BNDD, jax.vmap(read)(s_BNDD, q_BND)

        s0 = jnp.zeros((b, n, d, d), h_BTW.dtype)
        _, o_TBND = jax.lax.scan(step, s0, (q, k, v, beta_TBN))
        h_BTW = h_BTW + self.proj(rearrange(o_TBND, "t b n d -> b t (n d)"))
        return h_BTW + self.out(jax.nn.gelu(self.fc(self.ln2(h_BTW))))


class FastWeights(nnx.Module):
    """Tokens [B, T, token_size] -> outputs [B, T, out_size], causal in T; no position
    embedding (the recurrence orders the tokens) and no length limit; `shift` as the
    transformer's."""

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
        del max_length  # a recurrent model has no length limit
        self.embed = nnx.Linear(token_size, width, rngs=rngs)
        # the token shift (icl/transformer.py): x_{t-1} and y_{t-1} reach one token, so a
        # single delta-rule write can store the pair under the key of x_{t-1}
        self.embed_prev = (
            nnx.Linear(token_size, width, use_bias=False, rngs=rngs) if shift else None
        )
        self.blocks = nnx.List(
            [FastWeightBlock(width, heads, mlp_ratio, depth, rngs=rngs) for _ in range(depth)]
        )
        self.ln_f = nnx.LayerNorm(width, rngs=rngs)
        self.head = nnx.Linear(width, out_size, rngs=rngs)

    def __call__(self, tok_BTK: jax.Array) -> jax.Array:
        h_BTW = self.embed(tok_BTK)
        if self.embed_prev is not None:
            h_BTW = h_BTW + self.embed_prev(previous(tok_BTK))
        for block in self.blocks:
            h_BTW = block(h_BTW)
        return self.head(self.ln_f(h_BTW))

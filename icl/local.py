"""Local updates for the in-context transformer (Laskin, Metz, Nabarro, Saroufim, Noune,
Luschi, Sohl-Dickstein & Abbeel 2020, *Parallel Training of Deep Networks with Local Updates*).

The transformer's layers are cut into `blocks` equal stages; each stage ends in its own readout
(LayerNorm and a linear head, like the model's final one) and is trained by its own loss on that
readout. No gradient crosses a stage boundary: stage k reads `stop_gradient` of stage k-1's
output, so stages can update in parallel, on different devices, as soon as their forward pass is
done (`pipelined_value_and_grad`). With `overlap` o > 0, stage k's loss also trains the last o
layers of stage k-1 (it recomputes them from their own stopped input), the paper's overlapping
variant. The model's prediction is the last stage's readout; the other heads only train.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from metalearn.icl.transformer import Block, embed_tokens, run_blocks
from metalearn.meta.local_updates import AXIS, local_pipeline


class Embedding(nnx.Module):
    """Tokens to the residual stream: a linear map, positions, and the optional token shift."""

    def __init__(self, token_size: int, width: int, max_length: int, shift: bool, *, rngs):
        self.embed = nnx.Linear(token_size, width, rngs=rngs)
        self.embed_prev = (
            nnx.Linear(token_size, width, use_bias=False, rngs=rngs) if shift else None
        )
        self.pos = nnx.Param(nnx.initializers.normal(0.02)(rngs.params(), (max_length, width)))

    def __call__(self, tok_BTK: jax.Array) -> jax.Array:
        return embed_tokens(self, tok_BTK)


class Stage(nnx.Module):
    """Consecutive transformer layers and the readout their local loss is taken on."""

    def __init__(
        self,
        layers: int,
        width: int,
        heads: int,
        mlp_ratio: int,
        depth: int,
        out_size: int,
        remat: bool = False,
        matmul_dtype: str = "float32",
        *,
        rngs: nnx.Rngs,
    ):
        self.remat = remat
        self.blocks = nnx.List(
            [
                Block(width, heads, mlp_ratio, depth, matmul_dtype=matmul_dtype, rngs=rngs)
                for _ in range(layers)
            ]
        )
        self.ln = nnx.LayerNorm(width, rngs=rngs)
        self.head = nnx.Linear(width, out_size, rngs=rngs)

    def __call__(self, h_BTW: jax.Array) -> jax.Array:
        return run_blocks(self.blocks, h_BTW, self.remat)[0]

    def readout(self, h_BTW: jax.Array) -> jax.Array:
        return self.head(self.ln(h_BTW))


class LocalTransformer(nnx.Module):
    """A pre-LN causal transformer (as `icl.transformer.Transformer`) in `blocks` stages."""

    def __init__(
        self,
        token_size: int,
        out_size: int,
        max_length: int,
        *,
        depth: int,
        width: int,
        heads: int,
        mlp_ratio: int,
        shift: bool,
        blocks: int,
        overlap: int = 0,
        remat: bool = False,
        matmul_dtype: str = "float32",
        rngs: nnx.Rngs,
    ):
        if depth % blocks:
            raise ValueError(f"depth {depth} must be divisible by blocks {blocks}")
        if not 0 <= overlap <= depth // blocks:
            raise ValueError(f"overlap must be in [0, {depth // blocks}], got {overlap}")
        self.overlap, self.remat = overlap, remat
        self.embedding = Embedding(token_size, width, max_length, shift, rngs=rngs)
        self.stages = nnx.List(
            [
                Stage(
                    depth // blocks,
                    width,
                    heads,
                    mlp_ratio,
                    depth,
                    out_size,
                    remat,
                    matmul_dtype,
                    rngs=rngs,
                )
                for _ in range(blocks)
            ]
        )

    def __call__(self, tok_BTK: jax.Array) -> jax.Array:
        h_BTW = self.embedding(tok_BTK)
        for stage in self.stages:
            h_BTW = stage(h_BTW)
        return self.stages[-1].readout(h_BTW)

    def local_outputs(self, tok_BTK: jax.Array) -> list[jax.Array]:
        """Every stage's readout, each differentiable only in what its local loss trains: its
        own stage, the `overlap` layers before it, and (stage 0) the embedding."""
        layers = [block for stage in self.stages for block in stage.blocks]
        per = len(layers) // len(self.stages)
        acts = [self.embedding(tok_BTK)]  # acts[i]: the input of layer i
        outs = []
        for k, stage in enumerate(self.stages):
            start = max(k * per - self.overlap, 0)
            h_BTW = acts[start] if k == 0 else jax.lax.stop_gradient(acts[start])
            h_BTW, new = run_blocks(layers[start : (k + 1) * per], h_BTW, self.remat)
            acts.extend(new[k * per - start :])
            outs.append(stage.readout(h_BTW))
        return outs


def split_theta(theta: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """(embedding parameters, the stages' parameters stacked along a leading stage axis)."""
    stages = theta["stages"]
    per_stage = [stages[k] for k in sorted(stages)]
    return theta["embedding"], jax.tree_util.tree_map(lambda *x: jnp.stack(x), *per_stage)


def join_theta(embedding: dict[str, Any], stacked: Any, like: dict[str, Any]) -> dict[str, Any]:
    """Inverse of `split_theta` (keys and other entries taken from `like`)."""
    keys = sorted(like["stages"])
    stages = {k: jax.tree_util.tree_map(lambda x, i=i: x[i], stacked) for i, k in enumerate(keys)}
    return {**like, "embedding": embedding, "stages": stages}


def pipelined_value_and_grad(
    model: nnx.Module,
    stage_loss: Callable[[jax.Array, Any], tuple[jax.Array, dict[str, jax.Array]]],
    theta: dict[str, Any],
    tok_BTK: jax.Array,
    labels: Any,
    *,
    mesh: jax.sharding.Mesh,
    microbatches: int,
    axis: str = AXIS,
) -> tuple[jax.Array, dict[str, Any], dict[str, jax.Array]]:
    """The local-updates loss, gradient and last stage's metrics with stage k on device k of
    `mesh`'s `axis` (one stage per device), microbatches pipelined through the stages.

    `stage_loss(readout, labels)` gives a stage's (loss, metrics). Equal to
    `jax.value_and_grad` of `local_objective` over `local_outputs` (no overlap), to float
    rounding: the loss is a mean over the batch, and so is the mean over microbatches.
    """
    if model.overlap:
        raise ValueError("pipelined local updates need overlap 0 (no layer in two stages)")
    graph_e, _ = nnx.split(model.embedding)
    graph_s, _ = nnx.split(model.stages[0])

    def first(params_e, mb):
        return nnx.merge(graph_e, params_e)(mb[0])

    def stage(params_s, h_in, mb):
        lab = mb[1]
        module = nnx.merge(graph_s, params_s)
        h_out = module(h_in)
        loss, metrics = stage_loss(module.readout(h_out), lab)
        return loss, (h_out, metrics)

    params_e, stacked = split_theta(theta)
    losses, metrics, g_e, g_s = local_pipeline(
        first,
        stage,
        params_e,
        stacked,
        (tok_BTK, labels),
        mesh=mesh,
        axis=axis,
        microbatches=microbatches,
    )
    grad = join_theta(g_e, g_s, theta)
    last = jax.tree_util.tree_map(lambda m: m[-1], metrics)
    last.update({f"block{k}_loss": loss for k, loss in enumerate(losses)})
    return losses[-1], grad, last

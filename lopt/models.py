"""Inner models that learned optimizers train: an MLP, a small CNN and a small patch transformer.

Each is a frozen dataclass of its sizes with `init(key, in_shape, out_size) -> params` (a dict
of arrays, so every tensor reaches the optimizer under a readable name) and `apply(params, x)
-> out_BO` on a batch of inputs of shape `in_shape`. The CNN and the transformer read images,
so their task family must know its image shape (`data.Images`); the MLP reads any vector.

In a problem SPEC the model is written `32x32` (MLP widths; empty for a linear model),
`local:32x32` (the same MLP trained by local updates, below), `conv:8x16` (CNN channels) or
`transformer:32x2` (width x depth).
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Protocol

import jax
import jax.numpy as jnp
import numpy as np

from metalearn.core.errors import UserError

Params = dict


class InnerModel(Protocol):
    @property
    def spec(self) -> str: ...

    def init(self, key: jax.Array, in_shape: tuple[int, ...], out_size: int) -> Params: ...

    def apply(self, params: Params, x: jax.Array) -> jax.Array: ...

    def outputs(self, params: Params, x: jax.Array) -> list[jax.Array]:
        """What the training loss is taken on, the model's own output last (local updates
        add one output per local block; see `meta.local_updates.local_objective`)."""
        ...


def _dense(key: jax.Array, fan_in: int, fan_out: int, gain: float = 2.0) -> dict:
    """He-normal weights (gain 2 for ReLU layers, 1 for linear ones) and zero biases."""
    w = jax.random.normal(key, (fan_in, fan_out)) * math.sqrt(gain / fan_in)
    return {"w": w, "b": jnp.zeros(fan_out)}


def _positive(name: str, sizes: tuple[int, ...]) -> None:
    if any(s < 1 for s in sizes):
        raise UserError(f"{name} sizes must be positive ints, got {'x'.join(map(str, sizes))}")


def _image(in_shape: tuple[int, ...], model: str) -> tuple[int, int, int]:
    if len(in_shape) != 3:
        raise UserError(
            f"a {model} inner model reads images; use an image family such as "
            f"'images:base=digits', not one with inputs of shape {in_shape}"
        )
    return in_shape  # type: ignore[return-value]


@dataclasses.dataclass(frozen=True)
class MLP:
    """ReLU between layers, none after the last; He-initialized.

    `local=True` trains it by local updates (Laskin et al. 2020): each hidden layer has its own
    linear head `head{i}` and is trained only by that head's loss, reading its input through
    `stop_gradient`; the output layer is trained by the model's loss. `apply` is unchanged (the
    heads only train); `outputs` gives every head's output for the loss.
    """

    hidden: tuple[int, ...] = (32,)
    local: bool = False

    def __post_init__(self) -> None:
        _positive("mlp", self.hidden)
        if self.local and not self.hidden:
            raise UserError("a local: inner MLP needs at least one hidden layer, got none")

    @property
    def spec(self) -> str:
        return ("local:" if self.local else "") + "x".join(map(str, self.hidden))

    def init(self, key: jax.Array, in_shape: tuple[int, ...], out_size: int) -> Params:
        sizes = (int(np.prod(in_shape)), *self.hidden, out_size)
        keys = jax.random.split(key, len(sizes) - 1)
        params = {
            f"layer{i}": _dense(k, a, b)
            for i, (k, a, b) in enumerate(zip(keys, sizes[:-1], sizes[1:], strict=True))
        }
        if self.local:  # the heads' keys apart, so the layers start as the plain MLP's do
            head_keys = jax.random.split(jax.random.fold_in(key, 1), len(self.hidden))
            for i, (k, width) in enumerate(zip(head_keys, self.hidden, strict=True)):
                params[f"head{i}"] = _dense(k, width, out_size, gain=1.0)
        return params

    def apply(self, params: Params, x: jax.Array) -> jax.Array:
        return self.outputs(params, x, heads=False)[-1]

    def outputs(self, params: Params, x: jax.Array, heads: bool = True) -> list[jax.Array]:
        """What the training loss is taken on: the model's output, after (local models) every
        hidden layer's head's, each differentiable only in its own layer and head."""
        x = x.reshape(x.shape[0], -1)
        n = len(self.hidden) + 1
        outs = []
        for i in range(n):
            if self.local and i:
                x = jax.lax.stop_gradient(x)
            x = x @ params[f"layer{i}"]["w"] + params[f"layer{i}"]["b"][None]
            if i < n - 1:
                x = jax.nn.relu(x)
                if self.local and heads:
                    outs.append(x @ params[f"head{i}"]["w"] + params[f"head{i}"]["b"][None])
        return [*outs, x]


@dataclasses.dataclass(frozen=True)
class ConvNet:
    """3x3 convolutions of stride 2 ('SAME' padding, ReLU), a mean over positions, a linear
    head: the small CNN of learned_optimization's image task families, in plain lax."""

    channels: tuple[int, ...] = (8, 16)

    def __post_init__(self) -> None:
        _positive("conv", self.channels)
        if not self.channels:
            raise UserError("a conv inner model needs at least one layer of channels")

    @property
    def spec(self) -> str:
        return "conv:" + "x".join(map(str, self.channels))

    def init(self, key: jax.Array, in_shape: tuple[int, ...], out_size: int) -> Params:
        _h, _w, c = _image(in_shape, "conv")
        keys = jax.random.split(key, len(self.channels) + 1)
        params = {}
        for i, (k, c_out) in enumerate(zip(keys, self.channels, strict=False)):
            fan_in = 9 * c
            w = jax.random.normal(k, (3, 3, c, c_out)) * math.sqrt(2.0 / fan_in)
            params[f"conv{i}"] = {"w": w, "b": jnp.zeros(c_out)}
            c = c_out
        params["head"] = _dense(keys[-1], c, out_size, gain=1.0)
        return params

    def outputs(self, params: Params, x_BHWC: jax.Array) -> list[jax.Array]:
        return [self.apply(params, x_BHWC)]

    def apply(self, params: Params, x_BHWC: jax.Array) -> jax.Array:
        x = x_BHWC
        for i in range(len(self.channels)):
            p = params[f"conv{i}"]
            x = jax.lax.conv_general_dilated(
                x, p["w"], (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
            )
            x = jax.nn.relu(x + p["b"][None, None, None])
        return x.mean((1, 2)) @ params["head"]["w"] + params["head"]["b"][None]


@dataclasses.dataclass(frozen=True)
class PatchTransformer:
    """A pre-LayerNorm transformer over `patches` x `patches` image patches with learned
    position embeddings, mean-pooled into a linear head (a tiny ViT, Dosovitskiy et al. 2021)."""

    width: int = 32
    depth: int = 1
    heads: int = 2
    patches: int = 4  # per side

    def __post_init__(self) -> None:
        _positive("transformer", (self.width, self.depth, self.heads, self.patches))
        if self.width % self.heads:
            raise UserError(
                f"transformer width {self.width} must be a multiple of heads={self.heads}"
            )

    @property
    def spec(self) -> str:
        return f"transformer:{self.width}x{self.depth}"

    def init(self, key: jax.Array, in_shape: tuple[int, ...], out_size: int) -> Params:
        h, w, c = _image(in_shape, "transformer")
        if h % self.patches or w % self.patches:
            raise UserError(
                f"transformer patches={self.patches} must divide the image sides, got {h}x{w}"
            )
        patch = (h // self.patches) * (w // self.patches) * c
        d = self.width
        k_embed, k_pos, k_head, *k_blocks = jax.random.split(key, 3 + self.depth)
        params = {
            "embed": _dense(k_embed, patch, d, gain=1.0),
            "pos": jax.random.normal(k_pos, (self.patches**2, d)) * 0.02,
            "norm": {"scale": jnp.ones(d), "bias": jnp.zeros(d)},
            "head": _dense(k_head, d, out_size, gain=1.0),
        }
        for i, k in enumerate(k_blocks):
            kq, kk, kv, ko, k1, k2 = jax.random.split(k, 6)
            params[f"block{i}"] = {
                "norm1": {"scale": jnp.ones(d), "bias": jnp.zeros(d)},
                "q": _dense(kq, d, d, gain=1.0),
                "k": _dense(kk, d, d, gain=1.0),
                "v": _dense(kv, d, d, gain=1.0),
                # residual branches start small, so the stack starts near the identity
                "o": _dense(ko, d, d, gain=1.0 / self.depth),
                "norm2": {"scale": jnp.ones(d), "bias": jnp.zeros(d)},
                "fc1": _dense(k1, d, 2 * d),
                "fc2": _dense(k2, 2 * d, d, gain=1.0 / self.depth),
            }
        return params

    def outputs(self, params: Params, x_BHWC: jax.Array) -> list[jax.Array]:
        return [self.apply(params, x_BHWC)]

    def apply(self, params: Params, x_BHWC: jax.Array) -> jax.Array:
        b, height, width, c = x_BHWC.shape
        n = self.patches
        x = x_BHWC.reshape(b, n, height // n, n, width // n, c).transpose(0, 1, 3, 2, 4, 5)
        tokens_BTP = x.reshape(b, n * n, -1)
        x_BTD = _linear(params["embed"], tokens_BTP) + params["pos"][None]
        b, t, d = x_BTD.shape
        split = lambda z: z.reshape(b, t, self.heads, d // self.heads)  # noqa: E731
        for i in range(self.depth):
            p = params[f"block{i}"]
            h = _layer_norm(p["norm1"], x_BTD)
            q, k, v = (split(_linear(p[n], h)) for n in "qkv")
            att_BTD = jax.nn.dot_product_attention(q, k, v).reshape(b, t, d)
            x_BTD = x_BTD + _linear(p["o"], att_BTD)
            h = jax.nn.gelu(_linear(p["fc1"], _layer_norm(p["norm2"], x_BTD)))
            x_BTD = x_BTD + _linear(p["fc2"], h)
        pooled_BD = _layer_norm(params["norm"], x_BTD).mean(1)
        return _linear(params["head"], pooled_BD)


def _linear(p: dict, x: jax.Array) -> jax.Array:
    y = x @ p["w"]
    return y + jnp.broadcast_to(p["b"], y.shape)


def _layer_norm(p: dict, x: jax.Array) -> jax.Array:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    scale, bias = (jnp.broadcast_to(p[k], x.shape) for k in ("scale", "bias"))
    return (x - mean) * jax.lax.rsqrt(var + 1e-6) * scale + bias


def parse_model(text: str) -> InnerModel:
    """`32x32` (MLP widths, empty for linear), `conv:8x16` (channels), `transformer:32x2`."""
    kind, sep, sizes = text.partition(":")
    if not sep:
        kind, sizes = "mlp", text
    # strictly N or NxNx...: '64x', 'x64' and '64xx32' are typos, not models
    if not re.fullmatch(r"(\d+(x\d+)*)?", sizes):
        dims = None
    else:
        dims = tuple(map(int, sizes.split("x"))) if sizes else ()
    if kind == "mlp" and dims is not None:
        return MLP(dims)
    if kind == "local" and dims:
        return MLP(dims, local=True)
    if kind == "conv" and dims:
        return ConvNet(dims)
    if kind == "transformer" and dims and len(dims) == 2:
        return PatchTransformer(width=dims[0], depth=dims[1])
    raise UserError(
        f"an inner model is '32x32' (MLP widths), 'local:32x32' (an MLP trained by local "
        f"updates), 'conv:8x16' (CNN channels) or "
        f"'transformer:32x2' (width x depth), got {text!r}"
    )

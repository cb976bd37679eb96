"""Benchmark of the jitted meta-training step of in-context transformers (not a test).

    metalearn bench icl [--repeats 20] [--json out.json]

Prints, for each setting, compile time, the median time of one training step (forward,
backward, Adam) on a fixed batch, sequences/s, and achieved GFLOP/s counted as
tokens x (6 N + 12 L T d) (Kaplan et al. 2020; N parameters, L layers, T tokens per
sequence, d width), each also as a fraction of the machine's jitted float32 matmul rate
measured in the same run. Setting (a) is compared with a standard GPT-2-style flax model
that interleaves x and y tokens (Garg et al. 2022), the form most ICL code uses.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from metalearn import data
from metalearn.icl.learner import InContextLearner, ModelConfig, sequence_flops


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 0) -> float:
    """Median wall seconds of `fn()` (its result awaited) over `repeats` calls after `warmup`."""
    for _ in range(warmup):
        jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def matmul_rate(n: int = 1024, repeats: int = 20, bfloat16: bool = False) -> float:
    """Jitted n x n matmul rate in GFLOP/s: float32, or (`bfloat16`) bfloat16 operands with a
    float32 result, the product `meta.precision` uses."""
    a = jax.random.normal(jax.random.key(0), (n, n))
    b = jax.random.normal(jax.random.key(1), (n, n))
    if bfloat16:
        a, b = a.astype(jnp.bfloat16), b.astype(jnp.bfloat16)
    f = jax.jit(lambda a, b: jnp.matmul(a, b, preferred_element_type=jnp.float32))
    jax.block_until_ready(f(a, b))
    return 2 * n**3 / median_time(lambda: f(a, b), repeats) / 1e9


class GPT2Interleaved(nnx.Module):
    """The usual ICL reference model: tokens x_1, y_1, x_2, y_2, ... (y padded to x's size),
    flax's standard MultiHeadAttention with a causal mask, predictions read at x tokens."""

    def __init__(
        self, dim: int, out: int, length: int, depth: int, width: int, heads: int, *, rngs
    ):
        self.read_in = nnx.Linear(dim, width, rngs=rngs)
        self.pos = nnx.Embed(2 * length, width, rngs=rngs)
        self.blocks = nnx.List(
            [
                nnx.Dict(
                    ln1=nnx.LayerNorm(width, rngs=rngs),
                    att=nnx.MultiHeadAttention(heads, width, decode=False, rngs=rngs),
                    ln2=nnx.LayerNorm(width, rngs=rngs),
                    fc=nnx.Linear(width, 4 * width, rngs=rngs),
                    proj=nnx.Linear(4 * width, width, rngs=rngs),
                )
                for _ in range(depth)
            ]
        )
        self.ln_f = nnx.LayerNorm(width, rngs=rngs)
        self.read_out = nnx.Linear(width, out, rngs=rngs)

    def __call__(self, x_BLD, y_BL):
        b, n, d = x_BLD.shape
        y_tok = jnp.zeros_like(x_BLD).at[..., 0].set(y_BL)
        seq = jnp.stack([x_BLD, y_tok], axis=2).reshape(b, 2 * n, d)
        h = self.read_in(seq) + self.pos(jnp.arange(2 * n))
        mask = nnx.make_causal_mask(jnp.ones((b, 2 * n)))
        for blk in self.blocks:
            h = h + blk["att"](blk["ln1"](h), mask=mask)
            h = h + blk["proj"](jax.nn.gelu(blk["fc"](blk["ln2"](h))))
        return self.read_out(self.ln_f(h))[:, ::2, 0]


def _time_step(loss_fn, theta, batch, repeats):
    opt = optax.adam(1e-3)

    @jax.jit
    def step(theta, opt_state, batch):
        grads = jax.grad(loss_fn)(theta, batch)
        updates, opt_state = opt.update(grads, opt_state, theta)
        return optax.apply_updates(theta, updates), opt_state

    state = [theta, opt.init(theta)]
    t = time.perf_counter()
    compiled = step.lower(theta, state[1], batch).compile()
    compile_s = time.perf_counter() - t

    def run():
        state[0], state[1] = compiled(state[0], state[1], batch)
        return state[0]

    for _ in range(3):
        jax.block_until_ready(run())
    return compile_s, median_time(run, repeats)


def _row(setting, model, spec, length, batch, tokens, depth, width, heads, theta, times, rate):
    """One result row; FLOPs = tokens x (6 N + 12 L T d) per sequence, times the batch."""
    compile_s, step_s = times
    n_params = sum(x.size for x in jax.tree_util.tree_leaves(theta))
    flops = batch * sequence_flops(n_params, depth, tokens, width)
    gflops = flops / step_s / 1e9
    return {
        "setting": setting,
        "model": model,
        "family": spec,
        "length": length,
        "batch": batch,
        "tokens": tokens,
        "depth": depth,
        "width": width,
        "heads": heads,
        "params": n_params,
        "compile_s": compile_s,
        "step_s": step_s,
        "sequences_per_s": batch / step_s,
        "gflops": gflops,
        "fraction_of_matmul": gflops / rate,
    }


def bench_setting(name, spec, length, batch, model: ModelConfig, repeats, rate):
    """Our transformer: one token per example."""
    family = data.from_spec(spec)
    learner = InContextLearner.for_family(model, family, length)
    theta = learner.init(jax.random.key(0))
    b = family.sample(jax.random.key(1), batch, length)
    times = _time_step(lambda th, b: learner.loss(th, b)[0], theta, b, repeats)
    return _row(
        name,
        "metalearn transformer (one token per example)",
        spec,
        length,
        batch,
        length,
        model.depth,
        model.width,
        model.heads,
        theta,
        times,
        rate,
    )


def bench_gpt2(spec, length, batch, depth, width, heads, repeats, rate):
    """The reference: a GPT-2-style model over interleaved x, y tokens (2 per example)."""
    family = data.from_spec(spec)
    model = GPT2Interleaved(family.input_dim, 1, length, depth, width, heads, rngs=nnx.Rngs(0))
    graphdef, theta = nnx.split(model)
    b = family.sample(jax.random.key(1), batch, length)

    def loss(theta, b):
        return jnp.mean((nnx.merge(graphdef, theta)(b.x, b.y) - b.y) ** 2)

    times = _time_step(loss, theta, b, repeats)
    return _row(
        "a-reference",
        "GPT-2-style flax, interleaved x/y tokens",
        spec,
        length,
        batch,
        2 * length,
        depth,
        width,
        heads,
        theta,
        times,
        rate,
    )


# setting -> (family, examples per sequence, batch, model): the (a) and (b)
SETTINGS = {
    "a": ("linear_regression:dim=8,noise=0.5", 16, 256, ModelConfig(depth=4, width=64, heads=2)),
    "b": (
        "projected:base=digits,dim=64,num_classes=10",
        100,
        64,
        ModelConfig(depth=4, width=128, heads=4),
    ),
}


def measure(repeats: int = 20) -> dict:
    """Settings (a), its GPT-2-style reference and (b), with the matmul rate before and after."""
    load_before = os.getloadavg()
    rate = matmul_rate()
    a, b = (SETTINGS[name] for name in ("a", "b"))
    rows = [
        bench_setting("a", *a, repeats, rate),
        bench_gpt2(a[0], a[1], a[2], a[3].depth, a[3].width, a[3].heads, repeats, rate),
        bench_setting("b", *b, repeats, rate),
    ]
    # the same two settings with bfloat16 products (meta.precision): parameters stay float32
    for name, (spec, length, batch, model) in SETTINGS.items():
        bf16 = dataclasses.replace(model, matmul_dtype="bfloat16")
        rows.append(bench_setting(name + "-bf16", spec, length, batch, bf16, repeats, rate))
    return {
        "matmul_gflops": rate,
        "matmul_gflops_bf16": matmul_rate(bfloat16=True),
        "matmul_gflops_after": matmul_rate(),
        "rows": rows,
        "speedup_a": rows[0]["sequences_per_s"] / rows[1]["sequences_per_s"],
        "load_before": load_before,
    }


def figures(repeats: int = 20) -> list[dict]:
    """The suite's figures: sequences/s, GFLOP/s, fraction of the matmul rate, compile time."""
    m = measure(repeats)
    a, ref, b, a16, b16 = m["rows"][:5]
    out = [{"figure": "f32 matmul rate (1024^2, jitted)", "value": m["matmul_gflops"]}]
    out[-1]["unit"] = "GFLOP/s"
    out.append(
        {"figure": "bf16 x bf16 -> f32 matmul rate (1024^2)", "value": m["matmul_gflops_bf16"]}
        | {"unit": "GFLOP/s"}
    )
    for name, r in (("(a)", a), ("(a) GPT-2-style reference", ref), ("(b)", b)):
        out += [
            {"figure": f"ICL step {name} sequences/s", "value": r["sequences_per_s"], "unit": ""},
            {"figure": f"ICL step {name} GFLOP/s", "value": r["gflops"], "unit": "GFLOP/s"},
            {"figure": f"ICL step {name} compile", "value": r["compile_s"], "unit": "s"},
        ]
    out.append(
        {"figure": "ICL step (a) vs the reference", "value": m["speedup_a"], "unit": "x"}
        | {"goal": ">= 2.5x"}
    )
    out.append(
        {"figure": "ICL step (b) of the matmul rate", "value": b["fraction_of_matmul"]}
        | {"unit": "fraction", "goal": ">= 0.5"}
    )
    for r in m["rows"][5:]:  # accelerator sizes
        out.append(
            {"figure": f"ICL step ({r['setting']}) 8 x 512, batch 256, sequences/s", "unit": ""}
            | {"value": r["sequences_per_s"]}
        )
        out.append(
            {"figure": f"  ({r['setting']}) as a fraction of the f32 matmul rate", "unit": ""}
            | {"value": r["fraction_of_matmul"]}
        )
    for name, r16, r32 in (("(a)", a16, a), ("(b)", b16, b)):
        out.append(
            {"figure": f"ICL step {name} bfloat16 products, sequences/s", "unit": ""}
            | {"value": r16["sequences_per_s"]}
        )
        out.append(
            {"figure": f"  speed-up over float32 {name}", "unit": "x"}
            | {"value": r16["sequences_per_s"] / r32["sequences_per_s"]}
        )
    return [{"suite": "icl", **f} for f in out]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="metalearn bench icl", description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=20, help="timed steps per setting (median)")
    p.add_argument("--json", help="also write the numbers to this JSON file")
    args = p.parse_args(argv)

    m = measure(args.repeats)
    rate, rows, speedup = m["matmul_gflops"], m["rows"], m["speedup_a"]
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
        f"jax {jax.__version__} on {jax.devices()[0].platform}; load average before "
        f"{m['load_before'][0]:.2f}, after {os.getloadavg()[0]:.2f}"
    )
    print(
        f"matmul rate (1024x1024 float32, jitted): {rate:.1f} GFLOP/s "
        f"(again after the benchmark: {m['matmul_gflops_after']:.1f})"
    )
    cols = ("compile s", "step ms", "seq/s", "GFLOP/s", "of matmul")
    print(f"{'setting':12s} {'model':44s} " + " ".join(f"{c:>9s}" for c in cols))
    for r in rows:
        print(
            f"{r['setting']:12s} {r['model']:44s} {r['compile_s']:9.1f} {r['step_s'] * 1e3:9.1f} "
            f"{r['sequences_per_s']:9.0f} {r['gflops']:9.1f} {r['fraction_of_matmul']:9.1%}"
        )
    print(
        f"(a) sequences/s versus the interleaved GPT-2-style model: {speedup:.2f}x (goal >= 1.5x)"
    )
    print(f"(b) fraction of the matmul rate: {rows[2]['fraction_of_matmul']:.1%} (goal >= 50%)")
    if args.json:
        from metalearn.core.files import atomic_write_text

        atomic_write_text(args.json, json.dumps(m, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

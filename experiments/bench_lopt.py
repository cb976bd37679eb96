"""Benchmark of learned optimizers (not a test).

    metalearn bench lopt [--repeats 20]

1. The median time of one full training step (forward, backward, update) of an MLP
   784-1024-1024-10 at batch 128 with each learned optimizer, divided by Adam's, in the same run.
2. Each optimizer's update alone (the model's gradients fixed): its time, the bytes it must
   move at least (state read and written once, parameters and gradients read, the update
   written), the rate that makes, and its fraction of a measured copy bandwidth (`bench all`).
3. Meta-training throughput of PES with 8 tasks, truncation 10, horizon 100, on an MLP of
   2,410 parameters (64-32-10 on 64-d projected digits) at batch 128: inner training steps per
   second summed over tasks, antithetic pairs counted once.
"""

from __future__ import annotations

import argparse
import os
import platform

import jax
import jax.numpy as jnp
import optax

from metalearn.experiments.bench_estimators import inner_steps_per_s
from metalearn.experiments.bench_icl import median_time
from metalearn.lopt import (
    AdafacMLPLOpt,
    HandDesigned,
    MLPLOpt,
    RNNMLPLOpt,
    VeLO,
)

SIZES = (784, 1024, 1024, 10)


def mlp_params() -> list[tuple[jax.Array, jax.Array]]:
    keys = jax.random.split(jax.random.key(0), 3)
    return [
        (jax.random.normal(k, (a, b)) * (2 / a) ** 0.5, jnp.zeros(b))
        for k, a, b in zip(keys, SIZES[:-1], SIZES[1:], strict=True)
    ]


def nbytes(tree) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(tree))


def update_cost(lopt, theta, repeats: int) -> dict[str, float]:
    """The optimizer's own path on the 784-1024-1024-10 MLP's parameters, apart from the
    model: median seconds of `update` (gradients fixed), and the bytes it must move at least
    (its state read and written once; parameters and gradients read, the update written)."""
    params = mlp_params()
    grads = jax.tree_util.tree_map(
        lambda p: 1e-3 * jax.random.normal(jax.random.key(3), p.shape), params
    )
    opt = lopt.optimizer(theta)
    state = opt.init(params)

    @jax.jit
    def update(state):
        updates, state = opt.update(grads, state, params, loss=jnp.float32(1.0))
        return updates, state

    carry = [state]

    def run():
        updates, carry[0] = update(carry[0])
        return updates

    seconds = median_time(run, repeats, warmup=2)
    least = 2 * nbytes(state) + 3 * nbytes(params)
    return {"seconds": seconds, "bytes": least, "gb_per_s": least / seconds / 1e9}


def copy_bandwidth(floats: int = 2**28, repeats: int = 10) -> float:
    """GB/s of a jitted, in-place x + 1 over `floats` float32s (1 GiB: beyond the caches), read
    once and written once; the buffer is donated, so no page is touched for the first time."""
    f = jax.jit(lambda x: x + 1.0, donate_argnums=0)
    carry = [jnp.zeros(floats, jnp.float32)]

    def run():
        carry[0] = f(carry[0])
        return carry[0]

    return 2 * 4 * floats / median_time(run, repeats, warmup=2) / 1e9


def step_time(lopt, theta, repeats: int) -> float:
    """Median seconds of one training step of the 784-1024-1024-10 MLP at batch 128."""
    params = mlp_params()
    x = jax.random.normal(jax.random.key(1), (128, 784))
    y = jax.random.randint(jax.random.key(2), (128,), 0, 10)

    def loss_fn(params):
        h = x
        for i, (w, b) in enumerate(params):
            h = h @ w + b
            if i < len(params) - 1:
                h = jax.nn.relu(h)
        return optax.softmax_cross_entropy_with_integer_labels(h, y).mean()

    opt = lopt.optimizer(theta)

    @jax.jit
    def train_step(params, state):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, state = opt.update(grads, state, params, loss=loss)
        return optax.apply_updates(params, updates), state

    carry = [params, opt.init(params)]

    def run():
        carry[0], carry[1] = train_step(carry[0], carry[1])
        return carry[0]

    return median_time(run, repeats, warmup=2)


GOALS = {  # issue 18: step time as a multiple of Adam's
    "mlp_lopt(hidden=32)": "<= 6x",
    "mlp_lopt(hidden=4)": "<= 2x",
    "adafac_mlp_lopt(hidden=4)": "<= 2x",
    "velo(lstm 512, 256 MLPs)": "<= 2.5x",
}


def step_times(repeats: int = 20) -> dict[str, float]:
    """Median seconds of one training step with Adam and with each learned optimizer."""
    return {
        name: step_time(lopt, lopt.init(jax.random.key(0)), repeats)
        for name, lopt in lopts().items()
    }


def lopts() -> dict:
    """Adam, then the learned optimizers the suite times."""
    return {
        "adam": HandDesigned("adam", optax.adam, 1e-3),
        "mlp_lopt(hidden=32)": MLPLOpt(hidden=32),
        "mlp_lopt(hidden=4)": MLPLOpt(hidden=4),
        "adafac_mlp_lopt(hidden=4)": AdafacMLPLOpt(hidden=4),
        "rnn_mlp_lopt(hidden=32)": RNNMLPLOpt(),
        "velo(lstm 512, 256 MLPs)": VeLO(num_steps=1000),
    }


def figures(repeats: int = 20) -> list[dict]:
    """Each optimizer's step on the 784-1024-1024-10 MLP: milliseconds and multiple of Adam."""
    times = step_times(repeats)
    out = [{"figure": "MLP 784-1024-1024-10 step, adam", "value": times["adam"] * 1e3}]
    out[0]["unit"] = "ms"
    for name, t in list(times.items())[1:]:
        out.append(
            {"figure": f"same step, {name}", "value": t / times["adam"], "unit": "x Adam"}
            | ({"goal": GOALS[name]} if name in GOALS else {})
        )
    bandwidth = copy_bandwidth()
    out.append({"figure": "memory bandwidth (jitted in-place x + 1, 1 GiB)", "value": bandwidth})
    out[-1]["unit"] = "GB/s"
    for name, lopt in lopts().items():
        cost = update_cost(lopt, lopt.init(jax.random.key(0)), repeats)
        out.append(
            {"figure": f"update alone, {name}", "value": cost["seconds"] * 1e3, "unit": "ms"}
        )
        out.append(
            {"figure": f"  bytes it must move: {cost['bytes'] / 1e6:.0f} MB, at", "unit": "GB/s"}
            | {"value": cost["gb_per_s"]}
        )
        out.append(
            {"figure": "  of the measured bandwidth", "unit": "fraction"}
            | {"value": cost["gb_per_s"] / bandwidth}
        )
    return [{"suite": "lopt", **f} for f in out]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="metalearn bench lopt", description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args(argv)
    load = os.getloadavg()[0]
    times = step_times(args.repeats)
    base = times["adam"]
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cpus, jax {jax.__version__} on "
        f"{jax.devices()[0].platform}; load average before {load:.2f}"
    )
    print(f"training step of an MLP 784-1024-1024-10 at batch 128 (median of {args.repeats}):")
    for name, t in times.items():
        print(f"  {name:26s} {t * 1e3:8.1f} ms   {t / base:6.2f}x Adam")
    for name, lopt in (
        ("mlp_lopt(hidden=32)", MLPLOpt(hidden=32)),
        ("adafac_mlp_lopt(hidden=4)", AdafacMLPLOpt(hidden=4)),
    ):
        rate = inner_steps_per_s(lopt, "pes", max(5, args.repeats // 4))
        print(
            f"PES meta-training, {name}, 8 tasks, truncation 10, "
            f"MLP of 2410 parameters at batch 128: {rate:.0f} inner steps/s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

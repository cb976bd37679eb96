"""Benchmark of local updates with stages on different devices (not a test).

    metalearn bench local [--repeats 10] [--devices 1,2,4,8] [--microbatches 8]

The in-context transformer of the local-updates study (8 layers, width 64, 4 heads; linear
regression, 16 examples, batch 64) trained by local updates (Laskin et al. 2020) in K stages,
stage k on device k, microbatches pipelined through them (`icl.local.pipelined_value_and_grad`;
`meta.local_updates`): one fresh process per device count K (simulated devices on CPU). Each row:
the median time of a jitted step (gradient and Adam update), sequences/s, sequences/s per
device, and the largest relative difference between the pipelined gradient and the same local
gradient computed on one device without a pipeline. Two reference rows on one device: global
backprop, and 8 local stages without a pipeline. On 4 and 8 devices also K / 2 stages in two
pipelines side by side (data parallelism beside the pipeline: each pipeline takes half of every
microbatch). Simulated devices share the machine's cores:
on a 2-core CPU this shows correctness and the pipeline's overhead (its K - 1 bubble ticks,
the activations passed on), not a speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap

PIPED = ("pipeline", "replicated")  # the modes whose stages sit on different devices

STEP = f"PIPED = {PIPED!r}\n" + textwrap.dedent(
    """
    import dataclasses, json, sys, jax, jax.numpy as jnp, optax
    from flax import nnx
    from metalearn import data
    from metalearn.experiments.bench_icl import median_time
    from metalearn.experiments.local_updates import BASE
    from metalearn.icl.learner import InContextLearner
    from metalearn.icl.local import pipelined_value_and_grad
    from metalearn.icl.tokens import tokens

    n, repeats, micro, batch = (int(a) for a in sys.argv[1:5])
    mode = sys.argv[5]
    fam = data.from_spec("linear_regression:dim=8,noise=0.5")
    stages = {"pipeline": n, "replicated": n // 2, "global": 1, "local": 8}[mode]
    piped = mode in PIPED
    model = dataclasses.replace(BASE, local_blocks=stages)
    learner = InContextLearner.for_family(model, fam, 16)
    theta = learner.init(jax.random.key(0))
    b = fam.sample(jax.random.key(1), batch, 16)
    opt = optax.adam(1e-3)

    def grads(theta, b):
        if not piped:
            return jax.grad(lambda t: learner.loss(t, b)[0])(theta)
        mesh = jax.make_mesh((n,), ("stages",), devices=jax.devices()[:n],
                             axis_types=(jax.sharding.AxisType.Auto,))
        module = nnx.merge(learner.graphdef, theta)
        loss_of = lambda out, y: learner.output_loss(out[..., 0], y)
        _, g, _ = pipelined_value_and_grad(module, loss_of, theta, tokens(b.x, b.y, None), b.y,
                                           mesh=mesh, axis="stages", microbatches=micro)
        return g

    @jax.jit
    def step(theta, opt_state, b):
        g = grads(theta, b)
        updates, opt_state = opt.update(g, opt_state, theta)
        return optax.apply_updates(theta, updates), opt_state, g

    state = [theta, opt.init(theta)]
    _, _, g = step(*state, b)
    diff = 0.0
    if piped:
        ref = jax.grad(lambda t: learner.loss(t, b)[0])(theta)
        rel = lambda a, r: float(jnp.max(jnp.abs(a - r)) / (jnp.max(jnp.abs(r)) + 1e-30))
        diff = max(jax.tree_util.tree_leaves(jax.tree_util.tree_map(rel, g, ref)))
    def run():
        state[0], state[1], _ = step(state[0], state[1], b)
        return state[0]
    seconds = median_time(run, repeats, warmup=2)
    print(json.dumps({"devices": n, "stages": stages, "mode": mode, "step_s": seconds,
                      "grad_diff": diff}))
    """
)


def run(n: int, mode: str, repeats: int, microbatches: int, batch: int) -> dict:
    """One configuration's measurements, from a fresh process with `n` devices."""
    import jax

    env = dict(os.environ)
    if jax.default_backend() == "cpu":
        env["XLA_FLAGS"] = (
            env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={n}"
        ).strip()
    args = [str(n), str(repeats), str(microbatches), str(batch), mode]
    out = subprocess.run(
        [sys.executable, "-c", STEP, *args], capture_output=True, text=True, env=env, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"the {mode} step on {n} devices failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def figures(
    repeats: int = 10,
    devices: tuple[int, ...] = (1, 2, 4, 8),
    microbatches: int = 8,
    batch: int = 64,
) -> list[dict]:
    """Rows for `bench_all.print_table`: the two one-device references, then the pipeline."""
    rows = [run(1, mode, repeats, microbatches, batch) for mode in ("global", "local")]
    # one stage is global backprop (the first row): the pipeline starts at two devices
    rows += [run(n, "pipeline", repeats, microbatches, batch) for n in devices if n > 1]
    rows += [run(n, "replicated", repeats, microbatches, batch) for n in devices if n >= 4]
    out = []
    for r in rows:
        what = {
            "global": "global backprop",
            "local": "8 local stages, no pipeline",
            "pipeline": f"{r['stages']} stages pipelined",
            "replicated": f"{r['stages']} stages x 2 pipelines",
        }[r["mode"]]
        name = f"{what} on {r['devices']} device{'s' * (r['devices'] > 1)}"
        out.append({"figure": name, "value": r["step_s"] * 1e3, "unit": "ms"})
        per_device = batch / r["step_s"] / r["devices"]
        out.append({"figure": "  sequences/s per device", "value": per_device, "unit": ""})
        if r["mode"] in PIPED:
            out.append(
                {
                    "figure": "  gradient vs one device, largest relative difference",
                    "value": r["grad_diff"],
                    "unit": "",
                    "goal": "float rounding (< 1e-4)",
                }
            )
    return [{"suite": "local", **f} for f in out]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="metalearn bench local", description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--devices", default="1,2,4,8", help="device counts, comma-separated")
    p.add_argument("--microbatches", type=int, default=8)
    args = p.parse_args(argv)
    try:
        devices = tuple(int(d) for d in args.devices.split(","))
    except ValueError:
        p.error(f"--devices must be comma-separated integers, got {args.devices!r}")
    if any(8 % d for d in devices):
        p.error(f"--devices must divide the 8 layers (1, 2, 4 or 8), got {args.devices!r}")
    if args.microbatches < 1 or 64 % args.microbatches:
        p.error(f"--microbatches must divide the batch of 64, got {args.microbatches}")
    from metalearn.experiments.bench_all import print_table

    print_table(figures(args.repeats, devices, args.microbatches))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

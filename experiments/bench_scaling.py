"""Benchmark of the ICL meta-training step sharded over 1, 2, 4 and 8 devices (not a test).

    metalearn bench scaling [--repeats 10] [--devices 1,2,4,8]

Each device count runs in a fresh process (on CPU, simulated devices:
`--xla_force_host_platform_device_count`; on an accelerator host, the first N devices): the
jitted outer step of setting (a) of `bench icl` (linear regression, 16 examples, 4 layers of
width 64, batch 256) under the task mesh, from the same parameters and data. Prints the loss
and gradient norm of the first step (they must agree across device counts to float
rounding), the median step time, sequences/s and sequences/s per device. Simulated devices
share the machine's cores: on a 2-core CPU this measures the overhead of sharding, not a
speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap

STEP = textwrap.dedent(
    """
    import json, sys, time, jax, jax.numpy as jnp
    from metalearn import data
    from metalearn.experiments.bench_icl import median_time
    from metalearn.icl.learner import InContextLearner, ModelConfig, SequenceObjective
    from metalearn.meta.loop import LoopConfig, initial_state, outer_step
    from metalearn.meta.objective import backprop
    from metalearn.meta.optim import OptimConfig
    from metalearn.meta.sharding import task_mesh

    n, repeats, batch = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    fam = data.from_spec("linear_regression:dim=8,noise=0.5")
    learner = InContextLearner.for_family(ModelConfig(depth=4, width=64, heads=2), fam, 16)
    est = backprop(SequenceObjective(learner, fam, batch, 16))
    optim = OptimConfig()
    loop = LoopConfig(steps=1000)
    state, key = initial_state(learner.init, est, optim, loop)
    opt = optim.make(loop.steps)
    step = jax.jit(lambda s, k, i: outer_step(est, opt, s, k, i))
    with jax.set_mesh(task_mesh(jax.devices()[:n])):
        t = time.perf_counter()
        compiled = step.lower(state, key, jnp.int32(0)).compile()
        compile_s = time.perf_counter() - t
        first = compiled(state, key, jnp.int32(0))[1]
        carry = [state]
        def run():
            carry[0], metrics = compiled(carry[0], key, jnp.int32(1))
            return metrics["loss"]
        seconds = median_time(run, repeats, warmup=2)
    print(json.dumps({"devices": n, "loss": float(first["loss"]),
                      "grad_norm": float(first["grad_norm"]), "step_s": seconds,
                      "compile_s": compile_s}))
    """
)


def run_devices(n: int, repeats: int, batch: int = 256) -> dict:
    """One device count's measurements, from a fresh process."""
    import jax

    env = dict(os.environ)
    if jax.default_backend() == "cpu":
        env["XLA_FLAGS"] = (
            env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={n}"
        ).strip()
    out = subprocess.run(
        [sys.executable, "-c", STEP, str(n), str(repeats), str(batch)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"the {n}-device step failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def figures(repeats: int = 10, devices: tuple[int, ...] = (1, 2, 4, 8), batch: int = 256):
    """Step time and per-device throughput at each device count; the loss's largest relative
    difference from one device."""
    runs = [run_devices(n, repeats, batch) for n in devices]
    base = runs[0]
    out = []
    for r in runs:
        n = r["devices"]
        out.append({"figure": f"ICL step (a) on {n} devices", "value": r["step_s"] * 1e3})
        out[-1]["unit"] = "ms"
        out.append(
            {"figure": f"  sequences/s per device ({n})", "value": batch / r["step_s"] / n}
            | {"unit": ""}
        )
    worst = max(abs(r["loss"] - base["loss"]) / abs(base["loss"]) for r in runs)
    out.append(
        {"figure": "first-step loss, largest relative difference from 1 device", "value": worst}
        | {"unit": "", "goal": "float rounding (< 1e-5)"}
    )
    return [{"suite": "scaling", **f} for f in out]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="metalearn bench scaling", description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--devices", default="1,2,4,8", help="device counts, comma-separated")
    args = p.parse_args(argv)
    try:
        devices = tuple(int(d) for d in args.devices.split(","))
    except ValueError:
        p.error(f"--devices must be comma-separated integers, got {args.devices!r}")
    from metalearn.experiments.bench_all import print_table

    print_table(figures(args.repeats, devices))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

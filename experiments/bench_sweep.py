"""Benchmark of a sweep's throughput, its points batched against one at a time (not a test).

    metalearn bench sweep [--pools 8] [--steps 300] [--width 32] [--json out.json]

Runs a fixed short slice of study 2's grid (`gpicl_transition`: pool sizes 2^0 ... 2^(P-1) at
one width, fewer steps) twice as whole `metalearn sweep` commands in fresh directories (cold
compilation caches): once with `--batch P` (every point in one vmapped model) and once with
`--batch 1`. Each point trains and is evaluated as in the study. Prints the wall time and
points/hour of both, their ratio, the machine, and the largest difference between the two
tables' means (the batched points' results should match to float rounding).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax

from metalearn.experiments.bench_all import machine


def time_sweep(out: Path, pools: int, steps: int, width: int, batch: int) -> float:
    """Wall seconds of one `metalearn sweep` of the slice, as a fresh process."""
    argv = [sys.executable, "-m", "metalearn.cli", "sweep", "gpicl_transition"]
    argv += ["--grid", f"family.num_tasks=2**0..2**{pools - 1}", "--grid", f"model.width={width}"]
    argv += ["--set", f"loop.steps={steps}", "--set", f"loop.checkpoint_every={steps}"]
    argv += ["--set", "loop.progress=false", "--batch", str(batch), "--out", str(out)]
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def measure(pools: int, steps: int, width: int) -> tuple[dict[str, float], float]:
    """Wall seconds of the slice batched and one at a time, and the largest difference
    between the two tables' means."""
    import pandas as pd

    with tempfile.TemporaryDirectory() as tmp:
        walls = {}
        for mode, batch in (("batched", pools), ("one at a time", 1)):
            walls[mode] = time_sweep(Path(tmp) / str(batch), pools, steps, width, batch)
        a = pd.read_parquet(Path(tmp) / "1" / "results.parquet")
        b = pd.read_parquet(Path(tmp) / str(pools) / "results.parquet")
        return walls, float((a["mean"] - b["mean"]).abs().max())


def figures(repeats: int | None = None, pools: int = 4, steps: int = 100) -> list[dict]:
    """Points/hour batched and one at a time, for `bench all` (a smaller slice than the
    command's default; `repeats` is not used: each sweep runs once)."""
    del repeats
    walls, worst = measure(pools, steps, 32)
    rates = {mode: pools / wall * 3600 for mode, wall in walls.items()}
    out = [
        {"figure": f"sweep slice ({pools} pools, {steps} steps), {mode}", "value": rate}
        | {"unit": "points/hour"}
        for mode, rate in rates.items()
    ]
    out.append(
        {"figure": "batched / one at a time", "value": rates["batched"] / rates["one at a time"]}
        | {"unit": "x", "goal": ">= 2x"}
    )
    out.append({"figure": "tables' largest mean difference", "value": worst, "unit": ""})
    return [{"suite": "sweep", **f} for f in out]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="metalearn bench sweep", description=__doc__.splitlines()[0])
    p.add_argument("--pools", type=int, default=8, help="pool sizes 2^0 .. 2^(P-1) (points)")
    p.add_argument("--steps", type=int, default=300, help="meta-training steps per point")
    p.add_argument("--width", type=int, default=32, help="model width of every point")
    p.add_argument("--json", help="also write the numbers to this JSON file")
    args = p.parse_args(argv)
    if args.pools < 2 or args.steps < 1 or args.width < 4:
        p.error(
            f"need --pools >= 2, --steps >= 1, --width >= 4; got {args.pools}, "
            f"{args.steps}, {args.width}"
        )
    load_before = os.getloadavg()
    walls, worst = measure(args.pools, args.steps, args.width)
    print(
        f"machine: {machine()['cpu']}, {os.cpu_count()} cpus, jax {jax.__version__} on "
        f"{jax.devices()[0].platform}; load average before {load_before[0]:.2f}, after "
        f"{os.getloadavg()[0]:.2f}"
    )
    print(
        f"slice of study 2: {args.pools} pool sizes (2^0..2^{args.pools - 1}) at width "
        f"{args.width}, {args.steps} steps per point, trained and evaluated"
    )
    rates = {mode: args.pools / wall * 3600 for mode, wall in walls.items()}
    for mode, wall in walls.items():
        print(f"{mode:14s} {wall:8.1f} s  {rates[mode]:8.0f} points/hour")
    ratio = rates["batched"] / rates["one at a time"]
    print(f"batched / one at a time: {ratio:.2f}x points/hour (goal >= 2x)")
    print(f"largest difference between the two tables' means: {worst:.2e}")
    if args.json:
        from metalearn.core.files import atomic_write_text

        record = {
            "machine": machine()["cpu"],
            "cpus": os.cpu_count(),
            "device": jax.devices()[0].platform,
            "jax": jax.__version__,
            **vars(args),
            "wall_s": walls,
            "points_per_hour": rates,
            "ratio": ratio,
            "max_mean_difference": worst,
        }
        atomic_write_text(args.json, json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The benchmark suite: one table of the figures the issues ask for, with the machine it ran on.

    metalearn bench all [--only icl,lopt,estimators,scaling,sweep] [--repeats N] [--json FILE]

Runs each suite's `figures()` in this process (scaling in fresh ones): in-context step
throughput and its fraction of the machine's matmul rate (`bench icl`), learned-optimizer
step time as a multiple of Adam's (`bench lopt`), estimator throughput (`bench estimators`),
the ICL step on 1, 2, 4, 8 devices (`bench scaling`), and a sweep's points/hour batched and
one at a time (`bench sweep`, a 4-point slice). Times are medians of repeated steps
after warm-up; the peak resident memory of this process is read after each suite. With
`--json FILE` the run is appended to FILE as one JSON line (machine, date, figures), so runs
on different machines and days compare. Not a test: nothing is asserted about speed.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import resource
import sys
from pathlib import Path

import jax

SUITES = ("icl", "lopt", "estimators", "scaling", "sweep")
# the CPU features the numbers depend on: vector width, bfloat16 and matrix tiles
VECTOR_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")


def machine() -> dict:
    """What the figures were measured on: CPU model, cores, vector extensions, devices."""
    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    device = jax.devices()[0]
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "vector": [f for f in VECTOR_FLAGS if f in flags],
        "device": f"{device.platform}: {device.device_kind}",
        "devices": jax.device_count(),
        "jax": jax.__version__,
        "python": platform.python_version(),
    }


def peak_memory_mb() -> float:
    """This process's peak resident memory so far (Linux reports kilobytes, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


def print_table(figures: list[dict], about: dict | None = None) -> None:
    """Figures as aligned rows (suite, figure, value, unit, goal), under the machine line."""
    about = about or machine()
    print(
        f"machine: {about['cpu']}, {about['cores']} cores, vector "
        f"{' '.join(about['vector']) or 'none found'}; {about['devices']} x {about['device']}; "
        f"jax {about['jax']}"
    )
    width = max(len(f["figure"]) for f in figures)
    for f in figures:
        value = f["value"]
        shown = f"{value:10.3g}" if abs(value) < 1 or abs(value) >= 1e5 else f"{value:10.1f}"
        goal = f"  (goal {f['goal']})" if f.get("goal") else ""
        print(f"{f['suite']:11s} {f['figure']:{width}s} {shown} {f['unit']}{goal}")


def append_record(path: str | Path, record: dict) -> None:
    """Append `record` to the JSON Lines file `path`, whole or not at all."""
    from metalearn.core.files import atomic_write_text

    path = Path(path)
    before = path.read_text() if path.exists() else ""
    if before and not before.endswith("\n"):
        before += "\n"
    atomic_write_text(path, before + json.dumps(record) + "\n")


def run(suites: tuple[str, ...], repeats: int | None = None) -> dict:
    """Every figure of `suites`, with the machine, the date and each suite's peak memory."""
    about, figures = machine(), []
    for name in suites:
        module = importlib.import_module(f"metalearn.experiments.bench_{name}")
        figures += module.figures() if repeats is None else module.figures(repeats)
        figures.append(
            {"suite": name, "figure": "peak memory so far", "value": peak_memory_mb()}
            | {"unit": "MB"}
        )
    when = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    return {"date": when, "machine": about, "figures": figures}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="metalearn bench all", description=__doc__.splitlines()[0])
    p.add_argument("--only", default=",".join(SUITES), help="suites, comma-separated")
    p.add_argument("--repeats", type=int, help="timed repeats per figure (default: each suite's)")
    p.add_argument("--json", help="append this run to a JSON Lines file")
    args = p.parse_args(argv)
    suites = tuple(s for s in args.only.split(",") if s)
    unknown = [s for s in suites if s not in SUITES]
    if unknown or not suites:
        p.error(f"--only takes suites among {', '.join(SUITES)}; got {args.only!r}")
    if args.repeats is not None and args.repeats < 1:
        p.error(f"--repeats must be >= 1, got {args.repeats}")
    record = run(suites, args.repeats)
    print_table(record["figures"], record["machine"])
    if args.json:
        append_record(args.json, record)
        print(f"appended to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

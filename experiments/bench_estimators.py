"""Benchmark of the gradient estimators for unrolled graphs (not a test).

    metalearn bench estimators [--repeats 10] [--workers 8] [--truncation 10]

Meta-training throughput of each windowed estimator (truncated backprop, truncated ES, PES,
NRES) training learned optimizers: 8 tasks, truncation 10, horizon 100, on an MLP of 2,410
parameters (64-32-10 on 64-d projected digits) at batch 128, in inner training steps per
second summed over tasks (an antithetic pair counted once: both particles see the same data
at the same step), median of `repeats` estimates after two warm-up ones.
"""

from __future__ import annotations

import argparse

import jax

from metalearn.experiments.bench_icl import median_time
from metalearn.lopt import MLP, AdafacMLPLOpt, InnerProblem, InnerTraining, MLPLOpt
from metalearn.meta.estimators import ESTIMATORS

WINDOWED = ("tbptt", "truncated_es", "pes", "nres")
INNER = InnerProblem("projected:base=digits,dim=64", MLP((32,)), 128)


def inner_steps_per_s(
    lopt,
    estimator: str,
    repeats: int,
    *,
    workers: int = 8,
    truncation: int = 10,
    problem: InnerProblem = INNER,
) -> float:
    """Inner training steps per second of `estimator` meta-training `lopt` on `problem`."""
    task = InnerTraining(lopt, problem, horizon=100)
    est = ESTIMATORS[estimator](task, num_workers=workers, truncation=truncation, sigma=0.01)
    theta = lopt.init(jax.random.key(0))
    state = jax.jit(est.init)(jax.random.key(1), theta)
    estimate = jax.jit(est.estimate)
    carry = [state, 0]

    def run():
        out = estimate(theta, carry[0], jax.random.key(carry[1]), 0)
        carry[0], carry[1] = out.state, carry[1] + 1
        return out.grad

    return workers * truncation / median_time(run, repeats, warmup=2)


def figures(repeats: int = 10, workers: int = 8, truncation: int = 10) -> list[dict]:
    """One figure per learned optimizer and estimator: inner steps/s."""
    lopts = {"mlp_lopt(hidden=32)": MLPLOpt(hidden=32), "adafac(hidden=4)": AdafacMLPLOpt(hidden=4)}
    out = []
    for name, lopt in lopts.items():
        for est in WINDOWED:
            rate = inner_steps_per_s(lopt, est, repeats, workers=workers, truncation=truncation)
            out.append(
                {
                    "suite": "estimators",
                    "figure": f"{est}, {name}, {workers} tasks x truncation {truncation}",
                    "value": rate,
                    "unit": "inner steps/s",
                }
            )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="metalearn bench estimators", description=__doc__.splitlines()[0]
    )
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--truncation", type=int, default=10)
    args = p.parse_args(argv)
    from metalearn.experiments.bench_all import print_table

    print_table(figures(args.repeats, args.workers, args.truncation))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

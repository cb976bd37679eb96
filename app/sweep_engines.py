"""How a sweep's points run: one after another in this process, or as `jobs` worker processes
that split this machine's cores between them.

A point is handed over as plain data (`PointJob`: the experiment's name, its overrides and its
run directory; a `BatchJob` is several that train as one batched model), so a worker rebuilds
the config itself, from a module path or a file path alike, and each point writes only into
its own run directory (its status record included): the runner only counts. Workers die with
the runner (Linux `PR_SET_PDEATHSIG`), so a killed sweep leaves no orphan training a point
that the next start would find locked.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from metalearn.core.errors import UserError


@dataclasses.dataclass(frozen=True)
class PointJob:
    """One point to train and report: what a worker needs to rebuild and run it."""

    experiment: str
    overrides: tuple[str, ...]
    run_dir: str
    quiet: bool = False  # progress and warnings to the point's train.log, not the terminal


@dataclasses.dataclass(frozen=True)
class BatchJob:
    """Points that train together as one vmapped model, then report one by one."""

    points: tuple[PointJob, ...]
    quiet: bool = False


Job = PointJob | BatchJob


def run_job(job: Job) -> list[dict[str, Any]]:
    """Train and report a job's points unless finished; their status records."""
    from metalearn import runs, sweep

    members = job.points if isinstance(job, BatchJob) else (job,)
    configs = [runs.make_config(p.experiment, list(p.overrides)) for p in members]
    dirs = [Path(p.run_dir) for p in members]
    with contextlib.ExitStack() as stack:
        if job.quiet:  # progress and warnings to the (first) point's train.log
            dirs[0].mkdir(parents=True, exist_ok=True)
            log = stack.enter_context(open(dirs[0] / "train.log", "a"))
            stack.enter_context(contextlib.redirect_stderr(log))
        if isinstance(job, BatchJob):
            return sweep.run_batch(configs, dirs)
        return [sweep.run_point(configs[0], dirs[0])]


def run_jobs(
    jobs: list[Job], workers: int = 1, cache: Path | None = None
) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """(index, its points' statuses) of every job as it finishes: in order here when `workers`
    is 1, else from `workers` processes, each pinned to its share of the cores."""
    if workers < 1:
        raise UserError(f"--jobs must be a positive int, got {workers}")
    if workers == 1 or len(jobs) <= 1:
        for i, job in enumerate(jobs):
            yield i, run_job(job)
        return
    # several points' progress bars on one terminal would garble it
    jobs = [dataclasses.replace(job, quiet=True) for job in jobs]
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    context = mp.get_context("spawn")  # a fresh interpreter: no JAX state copied by fork
    counter = context.Value("i", 0)
    groups = core_groups(workers)
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=_start_worker,
        initargs=(counter, groups, str(cache) if cache else None),
    ) as pool:
        pending = {pool.submit(run_job, job): i for i, job in enumerate(jobs)}
        try:
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    yield pending.pop(future), future.result()
        finally:
            for future in pending:
                future.cancel()


def core_groups(workers: int) -> list[list[int]]:
    """This process's cores split into `workers` groups as even as they go (a group may be
    shared when there are more workers than cores)."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not cores:
        return [[] for _ in range(workers)]
    if workers >= len(cores):
        return [[cores[i % len(cores)]] for i in range(workers)]
    size, extra = divmod(len(cores), workers)
    groups, start = [], 0
    for i in range(workers):
        end = start + size + (i < extra)
        groups.append(cores[start:end])
        start = end
    return groups


def _start_worker(counter, groups: list[list[int]], cache: str | None) -> None:
    """Pin this worker to its group of cores and share the sweep's compilation cache."""
    _die_with_parent()
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    cores = groups[index % len(groups)]
    if cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cores)
        if len(cores) == 1:  # one core: no thread pool for XLA's Eigen kernels to fight over
            flags = os.environ.get("XLA_FLAGS", "")
            os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_multi_thread_eigen=false".strip()
    if cache:
        from metalearn.sweep import share_compilations

        share_compilations(Path(cache))


def _die_with_parent() -> None:
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: killed when the runner dies
    except OSError:
        pass
    if os.getppid() == 1:  # the runner died before the line above took effect
        os._exit(1)


ENGINES = ("local", "ray")


def run_ray(
    jobs: list[Job], address: str | None, cache: Path | None = None, cpus: float = 1.0
) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """(index, its points' statuses) of every job as it finishes, each a Ray task on the cluster at
    `address` (None: the one `ray.init` finds, e.g. from RAY_ADDRESS, or a local one).

    The run directories must be on a filesystem every node sees; each task asks for `cpus`
    cores. Ray is an optional extra: `pip install 'metalearn[ray]'`.
    """
    try:
        import ray
    except ImportError:
        raise UserError(
            "--engine ray needs Ray: pip install 'metalearn[ray]' (or pip install ray)"
        ) from None
    if cpus <= 0:
        raise UserError(f"--cpus-per-point must be positive, got {cpus}")
    connected_here = not ray.is_initialized()
    try:
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise UserError(f"cannot reach a Ray cluster at {address!r}: {e}") from None
    remote = ray.remote(num_cpus=cpus, max_retries=0)(_ray_point)
    quiet = [dataclasses.replace(job, quiet=True) for job in jobs]
    pending = {remote.remote(job, str(cache) if cache else None): i for i, job in enumerate(quiet)}
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                yield pending.pop(ref), ray.get(ref)
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
        if connected_here:
            ray.shutdown()


def _ray_point(job: Job, cache: str | None) -> list[dict[str, Any]]:
    """One job on a Ray worker: the sweep's compilation cache, then its points."""
    if cache:
        from metalearn.sweep import share_compilations

        share_compilations(Path(cache))
    return run_job(job)

"""Multi-host meta-training on JAX's own runtime: two processes on 127.0.0.1, joined through
`jax.distributed` with CPU collectives, train as one process does, and their checkpoint
resumes in one process. Real processes with hard kills and time limits: a stuck peer waits
for the other forever."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from metalearn.cli import main
from metalearn.meta.distributed import Cluster

LOG_EVERY_STEP = ["--set", "loop.log_every=1"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _job(argv: list[str], processes: int, timeout: float = 300.0) -> list[tuple[int, str, str]]:
    """Run `metalearn ARGV` as a job of `processes` processes; (returncode, stdout, stderr)
    of each. Every process is killed with SIGKILL when the job overruns `timeout`."""
    address = f"127.0.0.1:{_free_port()}"
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "metalearn.cli", *argv]
            + ["--coordinator", address, "--num-processes", str(processes)]
            + ["--process-id", str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        for i in range(processes)
    ]
    deadline = time.monotonic() + timeout
    try:
        ends = []
        for p in procs:
            out, err = p.communicate(timeout=max(deadline - time.monotonic(), 1))
            ends.append((p.returncode, out, err))
        return ends
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the {processes}-process job did not finish in {timeout} s") from None
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _assert_same_curve(a: list[dict], b: list[dict]) -> None:
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for key in ("loss", "grad_norm", "accuracy"):
        np.testing.assert_allclose([r[key] for r in a], [r[key] for r in b], rtol=2e-5, err_msg=key)


def test_two_processes_train_like_one_and_their_checkpoint_resumes_in_one(tiny_args, tmp_path):
    one = tmp_path / "one"
    assert main(["train", *tiny_args, *LOG_EVERY_STEP, "--out", str(one)]) == 0

    two = tmp_path / "two"
    ends = _job(["train", *tiny_args, *LOG_EVERY_STEP, "--out", str(two)], processes=2)
    for i, (code, _, err) in enumerate(ends):
        assert code == 0, f"process {i}:\n{err[-3000:]}"
    # the lead alone reports and writes; both computed every step, each on half the batch
    assert [("run written to" in out) for _, out, _ in ends] == [True, False]
    assert (two / "results.json").is_file() and (two / "config.json").is_file()
    _assert_same_curve(_records(two), _records(one))

    # the two-process run's step-3 checkpoint resumes in one process, as if never stopped
    import shutil

    shutil.rmtree(two / "checkpoints" / "6")
    assert main(["train", "--out", str(two), "--resume"]) == 0
    _assert_same_curve(_records(two), _records(one))


def test_two_processes_split_the_workers_of_pes_and_train_like_one(tmp_path):
    settings = ["problems=projected:base=digits,dim=8||16", "lopt_hidden=8", "horizon=6"]
    settings += ["truncation=3", "estimator=pes", "num_workers=2", "loop.steps=4"]
    settings += ["loop.log_every=1", "loop.checkpoint_every=2", "loop.progress=false"]
    settings += ["eval.problems=train", "eval.optional=", "eval.seeds=2", "eval.tune_seeds=1"]
    argv = ["train", "lopt_mlp", *(x for s in settings for x in ("--set", s))]
    assert main([*argv, "--out", str(tmp_path / "one")]) == 0
    ends = _job([*argv, "--out", str(tmp_path / "two")], processes=2)
    for i, (code, _, err) in enumerate(ends):
        assert code == 0, f"process {i}:\n{err[-3000:]}"
    one, two = _records(tmp_path / "one"), _records(tmp_path / "two")
    assert [r["step"] for r in two] == [1, 2, 3, 4]
    np.testing.assert_allclose([r["loss"] for r in two], [r["loss"] for r in one], rtol=2e-5)
    # an ES gradient divides a difference of two losses by 2 sigma = 0.02: float32 rounding
    # of losses near 3 (~1e-6) comes out ~5e-5 in it, whichever order the sums run in
    grad_norms = [[r["grad_norm"] for r in run] for run in (two, one)]
    np.testing.assert_allclose(*grad_norms, atol=2e-4)


@pytest.mark.parametrize(
    "args, message",
    [
        (("localhost", 2, 0), "HOST:PORT"),
        (("localhost:99999", 2, 0), "HOST:PORT"),
        (("localhost:1234", 0, 0), "num_processes"),
        (("localhost:1234", 2, 2), "0..1"),
    ],
)
def test_a_bad_job_description_is_one_clear_line(args, message):
    from metalearn.core.errors import UserError

    with pytest.raises(UserError, match=message):
        Cluster(*args)


def test_the_job_is_read_from_the_environment_whole_or_not_at_all():
    from metalearn.core.errors import UserError

    env = {"METALEARN_COORDINATOR": "h:1", "METALEARN_NUM_PROCESSES": "4"}
    with pytest.raises(UserError, match="METALEARN_PROCESS_ID"):
        Cluster.from_env(env)
    assert Cluster.from_env({**env, "METALEARN_PROCESS_ID": "3"}) == Cluster("h:1", 4, 3)
    assert Cluster.from_env({}) is None

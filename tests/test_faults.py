"""Faults a real run meets: kill -9 at any moment (checkpoint writes included) and a second
writer on the same run directory. Real processes, since the lock and the kill are the point."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import metalearn
from metalearn.cli import main
from metalearn.core.lock import LOCK_FILE, FolderLock
from tests.helpers import thetas_equal

# a run long enough to be killed in the middle: 40 steps, a checkpoint every 2, a record each
FAULT_SETTINGS = ["loop.steps=40", "loop.log_every=1", "loop.checkpoint_every=2"]


def _argv(tiny_args: list[str], out: Path) -> list[str]:
    extra = [x for s in FAULT_SETTINGS for x in ("--set", s)]
    return ["train", *tiny_args, *extra, "--out", str(out)]


def _start(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "metalearn.cli", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _locked(folder: Path) -> bool:
    path = folder / LOCK_FILE
    if not path.exists():
        return False
    with open(path) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def _records(run: Path) -> int:
    path = run / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def _wait(condition, proc: subprocess.Popen, timeout: float = 240.0) -> bool:
    """Poll until `condition()`; False when the process finished first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.01)
    raise TimeoutError("the training process made no progress")


def test_kill_9_anywhere_then_resume_equals_an_uninterrupted_run(tiny_args, tmp_path, capsys):
    reference = tmp_path / "reference"
    assert main(_argv(tiny_args, reference)) == 0
    run = tmp_path / "run"
    argv = _argv(tiny_args, run)

    # kill moments: while it compiles (lock held, nothing trained), then after 7 and 23
    # records: with a checkpoint every 2 steps, a kill often lands inside a checkpoint write
    moments = [lambda: _locked(run), lambda: _records(run) >= 7, lambda: _records(run) >= 23]
    for i, moment in enumerate(moments):
        proc = _start(argv if i == 0 else [*argv, "--resume"])
        if not _wait(moment, proc):
            raise AssertionError(proc.stderr.read().decode())
        if i == 0:
            # a second writer is refused with one line naming the holder, while it holds
            for extra in ([], ["--resume"]):
                assert main([*argv, *extra]) == 2
                err = capsys.readouterr().err
                assert "in use by metalearn train" in err and f"pid {proc.pid}" in err
                assert err.count("\n") == 1
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not _locked(run)  # the kernel freed the lock with its holder

    # a new command takes the lock over and finishes the run
    finish = _start([*argv, "--resume"])
    assert finish.wait(timeout=300) == 0, finish.stderr.read().decode()
    assert thetas_equal(metalearn.load(run).theta, metalearn.load(reference).theta)
    steps = [r["step"] for r in metalearn.meta.logs.read_metrics(run / "metrics.jsonl")]
    assert steps == list(range(1, 41))  # every step once: none lost, none twice


def test_the_lock_names_its_holder_and_frees_itself(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from metalearn.core.lock import FolderLock; "
            f"FolderLock({str(tmp_path)!r}, 'a test').acquire(); print('held', flush=True); "
            "time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout.readline().strip() == b"held"
        lock = FolderLock(tmp_path, "another")
        try:
            lock.acquire()
            raise AssertionError("a second holder got the lock")
        except metalearn.UserError as e:
            assert f"a test (pid {holder.pid} on {os.uname().nodename}" in str(e)
    finally:
        holder.kill()
        holder.wait()
    with FolderLock(tmp_path, "another"):  # no stale lock after kill -9
        assert _locked(tmp_path)
    assert not _locked(tmp_path)

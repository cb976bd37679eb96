"""The Ray engine against a local Ray head on 127.0.0.1: the same table as the local engine."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from metalearn.cli import main
from tests.helpers import cli_error
from tests.test_sweep import _argv

if os.environ.get("CI") != "true":  # CI installs the test extra, which has Ray: never skip there
    pytest.importorskip("ray")

RAY = Path(sys.executable).parent / "ray"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head():
    """A Ray head on 127.0.0.1 with 2 CPUs, stopped after the module's tests."""
    port = _free_port()
    # Ray's sockets live under its temp dir, whose path must stay short (AF_UNIX: 107 bytes)
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    start = [
        str(RAY), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
        "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}",
    ]  # fmt: skip
    subprocess.run(start, check=True, capture_output=True, timeout=180)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([str(RAY), "stop", "--force"], capture_output=True, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)


def test_a_sweep_on_ray_gives_the_local_table(tmp_path, ray_head):
    local, remote = tmp_path / "local", tmp_path / "ray"
    assert main(_argv(local)) == 0
    assert main([*_argv(remote), "--engine", "ray", "--address", ray_head]) == 0
    timing = ["wall_s", "steps_per_s"]
    a = pd.read_parquet(local / "results.parquet").drop(columns=timing)
    b = pd.read_parquet(remote / "results.parquet").drop(columns=timing)
    pd.testing.assert_frame_equal(a, b)
    # started again, every point is found finished on the cluster: none is trained again
    stamps = {p.name: (p / "status.json").stat().st_mtime_ns for p in (remote / "points").iterdir()}
    assert main([*_argv(remote), "--engine", "ray", "--address", ray_head]) == 0
    assert stamps == {
        p.name: (p / "status.json").stat().st_mtime_ns for p in (remote / "points").iterdir()
    }


def test_engine_refusals(tmp_path, capsys):
    assert "--engine must be one of local, ray" in cli_error(
        capsys, [*_argv(tmp_path / "a"), "--engine", "dask"]
    )
    assert "--address is for --engine ray" in cli_error(
        capsys, [*_argv(tmp_path / "b"), "--address", "127.0.0.1:1"]
    )

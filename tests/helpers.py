"""Assertions and runners several test modules share."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np

from metalearn.cli import main


def cli_error(capsys, argv: list[str]) -> str:
    """Run the CLI, expect exit status 2 with one clear line and no traceback; the line."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("metalearn: error:") and "Traceback" not in err
    assert err.count("\n") == 1, err
    return err


def thetas_equal(a, b) -> bool:
    """Whether two pytrees of arrays are bit-identical."""
    leaves = zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in leaves)


def run_on_devices(script: str, devices: int, *args: str) -> dict:
    """Run `script` in a fresh Python with `devices` simulated CPU devices (the device count is
    fixed when jax starts); the JSON object its last line of output prints."""
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    out = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=Path(__file__).parents[1],
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])

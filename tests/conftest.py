"""Shared fixtures. JAX tests are dominated by compilation, so tests share a few tiny shapes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if "METALEARN_DATA_DIR" not in os.environ and SHARED_DATA.is_dir():
    os.environ["METALEARN_DATA_DIR"] = str(SHARED_DATA)
# tests never reach a dataset hub
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# compilation dominates the suite: JAX's persistent cache keeps every compiled program (of
# this process and of the subprocesses the tests start), so a program compiled once - in
# another test, or in an earlier run - is loaded instead of compiled again
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".jax-cache")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# implicit rank promotion hides shape bugs ([B, D] + [D] where [B, 1] was meant): the library
# broadcasts explicitly, and the suite (with the subprocesses it starts) holds it to that
os.environ.setdefault("JAX_NUMPY_RANK_PROMOTION", "raise")

# a tiny quickstart: one small layer, short sequences, a few steps, few evaluation sequences
TINY = [
    "--set",
    "family=projected:base=digits,dim=8",
    "--set",
    "length=8",
    "--set",
    "batch_size=16",
    "--set",
    "model.depth=1",
    "--set",
    "model.width=16",
    "--set",
    "model.heads=2",
    "--set",
    "loop.steps=6",
    "--set",
    "loop.log_every=2",
    "--set",
    "loop.eval_every=0",
    "--set",
    "loop.checkpoint_every=3",
    "--set",
    "loop.progress=false",
    "--set",
    "eval.sequences=16",
    "--set",
    "eval.budgets=0;3;7",
    "--set",
    "eval.baselines=knn",
    "--set",
    "eval.families=train",
    "--set",
    "eval.optional=",  # no held-out dataset families
]


@pytest.fixture(scope="session")
def tiny_args() -> list[str]:
    return list(TINY)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_args) -> Path:
    """One tiny quickstart run directory, trained once for the whole session."""
    from metalearn.cli import main

    out = tmp_path_factory.mktemp("runs") / "tiny"
    assert main(["train", *tiny_args, "--out", str(out)]) == 0
    return out

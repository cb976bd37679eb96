"""Assertions several test modules share."""

from __future__ import annotations

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

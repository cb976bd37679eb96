"""Invalid base data is refused at load time, with one line, before any learner can score it."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metalearn.cli import main
from metalearn.core.errors import UserError
from metalearn.data.base import TaskFamily
from metalearn.data.datasets import load_base
from metalearn.icl.baselines import baseline
from metalearn.learners import LEARNERS
from metalearn.meta.evaluate import Predictor, StepLearner, evaluate


def _good(n: int = 40, d: int = 6):
    rng = np.random.default_rng(0)  # fixtures only
    return rng.normal(size=(n, d)).astype(np.float32), np.arange(n) % 4


def _nan_x():
    x, y = _good()
    x[17, 2] = np.nan
    return x, y


def _inf_x():
    x, y = _good()
    x[3, 0] = np.inf
    return x, y


def _huge_x():  # finite in float64, inf in float32
    x, y = _good()
    return x.astype(np.float64) * np.where(np.arange(40)[:, None] == 5, 1e300, 1.0), y


BAD = {
    "nan": (_nan_x, ["field x", "non-finite", "example 17"]),
    "inf": (_inf_x, ["field x", "non-finite", "example 3"]),
    "overflow": (_huge_x, ["field x", "non-finite", "example 5"]),
    "empty": (lambda: (np.zeros((0, 6)), np.zeros(0, int)), ["field x", "(0, 6)"]),
    "strings": (lambda: (np.array([["a", "b"]] * 4), np.arange(4)), ["field x", "dtype", "<U1"]),
    "one_dim": (lambda: (np.arange(8.0), np.arange(8) % 2), ["field x", "(8,)", "(n, 1)"]),
    "float_labels": (lambda: (_good()[0], np.arange(40) * 0.5), ["field y", "0.5", "integers"]),
    "negative": (lambda: (_good()[0], np.arange(40) - 1), ["field y", "-1", "example 0"]),
    "lengths": (lambda: (_good()[0], np.arange(39) % 4), ["40 examples", "39 labels"]),
    "label_shape": (lambda: (_good()[0], np.zeros((40, 2), int)), ["field y", "(40, 2)"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_base_files_are_refused_with_the_field(tmp_path, case):
    make, words = BAD[case]
    x, y = make()
    path = tmp_path / f"{case}.npz"
    np.savez(path, x=x, y=y)
    with pytest.raises(UserError) as e:
        load_base(str(path))
    msg = str(e.value)
    assert str(path) in msg and "\n" not in msg
    for w in words:
        assert w in msg, (w, msg)


def test_integral_float_labels_and_column_labels_are_accepted(tmp_path):
    x, y = _good()
    np.savez(tmp_path / "ok.npz", x=x, y=y.astype(np.float64)[:, None])
    got_x, got_y = load_base(str(tmp_path / "ok.npz"))
    assert got_y.dtype == np.int32 and np.array_equal(got_y, y)
    assert np.array_equal(got_x, x)


def test_missing_data_dir_is_named(monkeypatch, tmp_path):
    from metalearn.data.datasets import _load_cached

    monkeypatch.setenv("METALEARN_DATA_DIR", str(tmp_path / "nowhere"))
    _load_cached.cache_clear()
    with pytest.raises(UserError, match="METALEARN_DATA_DIR=.*nowhere.*is not a folder"):
        load_base("mnist")
    _load_cached.cache_clear()


def _input_learners() -> list[tuple[str, str]]:
    """(learner, how it reads the data) for every registered learner: predictors read
    sequences of examples, step learners train an inner problem over the same file."""
    pairs = []
    for name, (make, _) in sorted(LEARNERS.items()):
        learner = make()
        if isinstance(learner, Predictor):
            pairs.append((name, "examples"))
        if isinstance(learner, StepLearner):
            pairs.append((name, "steps"))
    return pairs


@pytest.mark.parametrize("name, unit", _input_learners())
def test_a_nan_in_a_user_file_never_becomes_a_score(tmp_path, capsys, name, unit):
    x, y = _nan_x()
    np.savez(tmp_path / "nan_x.npz", x=x, y=y)
    family = f"projected:base={tmp_path / 'nan_x.npz'},dim=4"
    if unit == "steps":
        family += "|8|16"
    out = tmp_path / "r.json"
    argv = ["eval", "--learner", name, "--family", family, "--sequences", "4", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "field x" in err and "nan_x.npz" in err
    assert not out.exists()


def test_a_trained_run_refuses_the_nan_file_too(tiny_run, tmp_path, capsys):
    x, y = _nan_x()
    np.savez(tmp_path / "nan_x.npz", x=x, y=y)
    family = f"projected:base={tmp_path / 'nan_x.npz'},dim=8"
    argv = ["eval", "--learner", str(tiny_run), "--family", family, "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    assert "field x" in capsys.readouterr().err


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Poisoned(TaskFamily):
    """A user's family whose inputs hold a NaN (the loader never saw them)."""

    name: ClassVar[str] = "poisoned"
    kind: ClassVar = "classification"

    @property
    def input_dim(self) -> int:
        return 3

    @property
    def num_classes(self) -> int:
        return 2

    def sample_task(self, key):
        return jax.random.normal(key, (3,))

    def sample_sequence(self, task, key, length):
        x = jax.random.normal(key, (length, 3))
        x = x.at[length // 2, 0].set(jnp.nan)
        return x, (x @ task > 0).astype(jnp.int32)


def test_evaluate_refuses_non_finite_sequences_from_any_family():
    with pytest.raises(UserError, match="non-finite"):
        evaluate(baseline("knn"), _Poisoned(), [0, 2, 5], 4, jax.random.key(0))

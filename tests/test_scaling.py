"""The power-law fit of `metalearn fit`, on synthetic sweep tables with a known law."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from metalearn.cli import main
from metalearn.core.errors import UserError
from metalearn.scaling import fit_power_law, fit_sweep, power_law
from tests.helpers import cli_error


def test_fit_recovers_a_known_law():
    x = np.repeat(np.geomspace(1e6, 1e10, 6), 3)
    y = power_law(x, 40.0, 0.3, 0.5)
    a, b, c = fit_power_law(x, y)
    assert b == pytest.approx(0.3, rel=1e-3)
    assert c == pytest.approx(0.5, rel=1e-3)
    assert a == pytest.approx(40.0, rel=1e-2)


def _sweep(tmp_path, widths=(8, 16, 32, 64, 128, 256), seeds=3, noise=0.01):
    """A sweep directory whose table follows y = 40 C^-0.3 + 0.5, times seed noise."""
    rng = np.random.default_rng(0)
    rows = []
    for w in widths:
        flops = 1e6 * w**2
        for s in range(seeds):
            loss = power_law(flops, 40.0, 0.3, 0.5) * (1 + noise * rng.standard_normal())
            rows.append(
                {
                    "model.width": str(w),
                    "seed": s,
                    "point": f"w{w}s{s}",
                    "status": "done",
                    "train_flops": flops,
                    "final_train_loss": loss,
                    "learner": "model",
                    "metric": "mse",
                    "training_family": True,
                    "subset": "all",
                    "budget": 9,
                    "mean": 2 * loss,
                    "stderr": 0.01,
                }
            )
    rows.append({"model.width": "512", "seed": 0, "point": "bad", "status": "failed"})
    frame = pd.DataFrame(rows)
    tmp_path.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(tmp_path / "results.parquet", index=False)
    return tmp_path


def test_held_out_point_is_predicted_within_its_interval(tmp_path):
    r = fit_sweep(_sweep(tmp_path), bootstrap=200)
    assert r.x == "train_flops" and r.y == "final_train_loss"
    assert r.fitted_points == 15 and r.holdout_x == pytest.approx(1e6 * 256**2)
    lo, hi = r.predicted_interval
    assert lo <= r.measured <= hi or abs(r.measured / r.predicted - 1) < 0.02
    assert r.measured / r.predicted == pytest.approx(1, abs=0.03)
    saved = json.loads((tmp_path / "fit.json").read_text())
    assert saved["b"] == pytest.approx(r.b) and (tmp_path / "fit.png").stat().st_size > 0
    # the same seed gives the same interval; a metric of the table serves as y
    assert fit_sweep(tmp_path, bootstrap=200).predicted_interval == r.predicted_interval
    m = fit_sweep(tmp_path, y="mse", bootstrap=20)
    assert m.measured == pytest.approx(2 * r.measured)


def test_fit_command_and_its_refusals(tmp_path, capsys):
    d = _sweep(tmp_path / "s")
    assert main(["fit", str(d), "--x", "flops", "--y", "loss", "--bootstrap", "50"]) == 0
    out = capsys.readouterr().out
    assert "held out: train_flops" in out and "measured / predicted" in out
    assert main(["fit", str(d), "--holdout", "none", "--bootstrap", "5"]) == 0
    assert "held out" not in capsys.readouterr().out
    assert "--x 'width'" in cli_error(capsys, ["fit", str(d), "--x", "width"])
    assert "--y 'accuracy'" in cli_error(capsys, ["fit", str(d), "--y", "accuracy"])
    assert "--holdout must be" in cli_error(capsys, ["fit", str(d), "--holdout", "half"])
    small = _sweep(tmp_path / "small", widths=(8, 16, 32))
    with pytest.raises(UserError, match="at least 3 distinct x"):
        fit_sweep(small)

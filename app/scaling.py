"""Predictable scaling in miniature: fit L(C) = a C^-b + c to a sweep's final losses against
training compute, hold the largest point out, and compare its prediction with its measurement
(the method of the GPT-4 technical report, OpenAI 2023, Sec. 3; the form of Kaplan et al.
2020 and Hoffmann et al. 2022 with an irreducible term c).

    metalearn fit DIR --x flops --y loss --holdout largest

Each seed of each point is one observation. The interval on the prediction is a bootstrap over
seeds: every point's seeds are resampled with replacement, the law refitted and the held-out
compute predicted again; the measured value's interval is the same resampling of its seeds.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from metalearn.core.errors import UserError
from metalearn.core.files import atomic_write, atomic_write_text

ALIASES = {"flops": "train_flops", "loss": "final_train_loss"}
HOLDOUTS = ("largest", "none")


def power_law(c: np.ndarray, a: float, b: float, floor: float) -> np.ndarray:
    return a * np.power(c, -b) + floor


def fit_power_law(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Least-squares (a, b, c) of y = a x^-b + c, with a >= 0, 0 <= b <= 10, 0 <= c <= min y.

    x is divided by its smallest value for conditioning (a is reported in the original units).
    """
    from scipy.optimize import curve_fit

    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(np.unique(x)) < 3:
        raise UserError(
            f"a fit of a C^-b + c needs at least 3 distinct x values, got {len(np.unique(x))}"
        )
    scale = x.min()
    u = x / scale
    # a start from the log-log line through y - c0, with c0 half the smallest loss
    floor0 = 0.5 * y.min()
    slope, intercept = np.polyfit(np.log(u), np.log(np.maximum(y - floor0, 1e-12)), 1)
    p0 = (math.exp(intercept), min(max(-slope, 1e-3), 9.0), floor0)
    try:
        (a, b, floor), _ = curve_fit(
            power_law,
            u,
            y,
            p0=p0,
            bounds=([0.0, 0.0, 0.0], [np.inf, 10.0, max(y.min(), 1e-12)]),
            maxfev=20000,
        )
    except RuntimeError as e:
        raise UserError(f"the power-law fit did not converge: {e}") from None
    return float(a * scale**b), float(b), float(floor)


@dataclass(frozen=True)
class FitResult:
    x: str
    y: str
    a: float
    b: float
    c: float
    fitted_points: int
    holdout_x: float | None
    predicted: float | None
    predicted_interval: tuple[float, float] | None
    measured: float | None
    measured_interval: tuple[float, float] | None
    bootstrap: int

    def summary(self) -> str:
        lines = [
            f"fit of {self.y} = a * {self.x}^-b + c over {self.fitted_points} observations:",
            f"  a = {self.a:.4g}, b = {self.b:.4g}, c = {self.c:.4g}",
        ]
        if self.holdout_x is not None:
            lo, hi = self.predicted_interval
            mlo, mhi = self.measured_interval
            lines += [
                f"held out: {self.x} = {self.holdout_x:.4g}",
                f"  predicted {self.predicted:.4f} (95% bootstrap over seeds: {lo:.4f}..{hi:.4f})",
                f"  measured  {self.measured:.4f} (95% bootstrap over seeds: {mlo:.4f}..{mhi:.4f})",
                f"  measured / predicted = {self.measured / self.predicted:.3f}",
            ]
        return "\n".join(lines)


def observations(frame, x: str, y: str) -> tuple[np.ndarray, np.ndarray, str, str]:
    """(x, y) per finished point and seed, from a sweep's table; `x` and `y` are columns
    (`flops` and `loss` stand for train_flops and final_train_loss) or, for y, a metric of the
    model at the last budget on its own training family's unseen (or fresh) tasks."""
    x, y = ALIASES.get(x, x), ALIASES.get(y, y)
    done = frame[frame["status"] == "done"]
    if done.empty:
        raise UserError("the sweep has no finished point to fit")
    if x not in done.columns:
        raise UserError(f"--x {x!r} is not a column of the table ({', '.join(done.columns)})")
    if y in done.columns:
        per_point = done.groupby("point", sort=False).first()
        xs, ys = per_point[x], per_point[y]
    else:
        rows = done[(done["learner"] == "model") & (done["metric"] == y)]
        if rows.empty:
            metrics = sorted(done["metric"].dropna().unique())
            raise UserError(f"--y {y!r} is neither a column nor a metric of the table ({metrics})")
        if rows["training_family"].astype(bool).any():
            rows = rows[rows["training_family"].astype(bool)]
        rows = rows[rows["subset"].isin(["unseen", "all"])]
        rows = rows[rows["budget"] == rows["budget"].max()]
        per_point = rows.groupby("point", sort=False).first()
        xs, ys = per_point[x], per_point["mean"]
    xs, ys = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
    keep = np.isfinite(xs) & np.isfinite(ys)
    if not keep.any():
        raise UserError(
            f"no finished point has both {x} and {y} (is {x} counted by this experiment?)"
        )
    return xs[keep], ys[keep], x, y


def fit_sweep(
    sweep_dir: str | Path,
    *,
    x: str = "flops",
    y: str = "loss",
    holdout: str = "largest",
    bootstrap: int = 1000,
    seed: int = 0,
) -> FitResult:
    """Fit the law to a sweep's table, hold out its largest x, write fit.json and fit.png."""
    import jax
    import pandas as pd

    if holdout not in HOLDOUTS:
        raise UserError(f"--holdout must be one of {', '.join(HOLDOUTS)}, got {holdout!r}")
    if bootstrap < 1:
        raise UserError(f"--bootstrap must be a positive int, got {bootstrap}")
    sweep_dir = Path(sweep_dir)
    table = sweep_dir / "results.parquet"
    if not table.exists():
        raise UserError(f"{str(table)!r} does not exist; run `metalearn sweep` into it first")
    xs, ys, x, y = observations(pd.read_parquet(table), x, y)
    top = xs.max() if holdout == "largest" else None
    fit_mask = xs < top if top is not None else np.ones_like(xs, bool)
    a, b, c = fit_power_law(xs[fit_mask], ys[fit_mask])

    groups = [np.flatnonzero(xs == v) for v in np.unique(xs)]
    key = jax.random.key(seed)
    # each point's seeds resampled with replacement: draws[i][r] for group i, resample r
    draws = [
        g[
            np.asarray(
                jax.random.randint(jax.random.fold_in(key, i), (bootstrap, len(g)), 0, len(g))
            )
        ]
        for i, g in enumerate(groups)
    ]
    predicted = measured = None
    predictions, measurements = [], []
    if top is not None:
        held = np.flatnonzero(xs == top)
        for r in range(bootstrap):
            idx = np.concatenate([d[r] for d in draws])
            sample_x, sample_y = xs[idx], ys[idx]
            inside = sample_x < top
            try:
                pa, pb, pc = fit_power_law(sample_x[inside], sample_y[inside])
            except UserError:
                continue
            predictions.append(power_law(top, pa, pb, pc))
            measurements.append(sample_y[~inside].mean())
        predicted = float(power_law(top, a, b, c))
        measured = float(ys[held].mean())
    result = FitResult(
        x=x,
        y=y,
        a=a,
        b=b,
        c=c,
        fitted_points=int(fit_mask.sum()),
        holdout_x=None if top is None else float(top),
        predicted=predicted,
        predicted_interval=_interval(predictions),
        measured=measured,
        measured_interval=_interval(measurements),
        bootstrap=bootstrap,
    )
    atomic_write_text(sweep_dir / "fit.json", json.dumps(asdict(result), indent=1) + "\n")
    _plot(sweep_dir / "fit.png", xs, ys, fit_mask, result)
    return result


def _interval(values: list[float]) -> tuple[float, float] | None:
    if not values:
        return None
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)


def _plot(path: Path, xs, ys, fit_mask, r: FitResult) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.scatter(xs[fit_mask], ys[fit_mask], s=14, label="fitted")
    grid = np.geomspace(xs.min(), xs.max() * 1.5, 100)
    ax.plot(grid, power_law(grid, r.a, r.b, r.c), "k--", lw=1, label=f"a C^-{r.b:.2f} + {r.c:.3g}")
    if r.holdout_x is not None:
        ax.scatter(xs[~fit_mask], ys[~fit_mask], s=14, color="C3", label="held out")
        if r.predicted_interval is not None:
            lo, hi = r.predicted_interval
            ax.errorbar(
                [r.holdout_x],
                [r.predicted],
                yerr=[[r.predicted - lo], [hi - r.predicted]],
                fmt="x",
                color="k",
                capsize=3,
                label="predicted (95%)",
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(r.x)
    ax.set_ylabel(r.y)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110), mode="wb")
    plt.close(fig)

"""Where a sweep's learner stops memorizing: regime labels and threshold pool sizes, computed
from the numbers of a sweep's table (`metalearn.sweep.write_table`).

Two readings, one per study:

- `regimes` (Kirsch et al. 2022, GPICL, Sec. 4): from each point's accuracy on seen (pool) and
  unseen tasks at the first and the last budget, one of the paper's three regimes:
  *instance memorization* (no within-sequence improvement beyond 2 standard errors on seen or
  on unseen tasks), *task memorization* (seen tasks improve, unseen do not), *learning-to-learn*
  (unseen tasks improve, and their last-budget accuracy is within 2 standard errors plus a
  stated margin of the seen tasks'). A point whose seen and unseen tasks both improve, the
  unseen staying further below, is *transition*; one whose seen tasks need no context (no gain,
  as a memorized single task is solved from budget 0) while unseen tasks gain a little and stay
  below is instance memorization too. A point without a pool (fresh tasks, subset 'all') has one
  subset, which serves as both.
- `closer_to` (Raventos et al. 2023, Sec. 4): on fresh tasks, whether the model's predictions lie
  closer to ridge's (the Bayes estimator of the fresh-task prior) or to dMMSE's (that of the
  training pool), from the `distance_to_*` metrics of the report, averaged over budgets >= 1.

`threshold` turns either into the pool size of the transition: the smallest one from which on
the property holds at every larger pool size, or None when the largest pool lacks it.

Seeds: a point's numbers are averaged over its seeds, and the standard error of that average
combines the seeds' standard errors over sequences (sqrt(sum se^2) / n): the question is
whether a trained model improves, which is a matter of the evaluation's sampling noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from metalearn.core.errors import UserError

INSTANCE = "instance memorization"
TASK = "task memorization"
TRANSITION = "transition"
LEARNING = "learning-to-learn"
REGIMES = (INSTANCE, TASK, TRANSITION, LEARNING)


def order_values(values) -> list[str]:
    """Grid values in numeric order where they are numbers, 'none' (unlimited) last."""

    def key(v: str):
        try:
            return (0, float(v), v)
        except ValueError:
            return (1, math.inf, v)

    return sorted({str(v) for v in values}, key=key)


def _rows(frame, learner: str, metric: str):
    """Finished rows of one learner and metric, each point on its own training family."""
    need = {"status", "learner", "metric", "subset", "budget", "mean", "stderr"}
    missing = need - set(frame.columns)
    if missing:
        raise UserError(f"the table lacks the columns {sorted(missing)}; is it a sweep's table?")
    rows = frame[(frame["status"] == "done") & (frame["learner"] == learner)]
    rows = rows[rows["metric"] == metric]
    if "training_family" in rows.columns and rows["training_family"].astype(bool).any():
        rows = rows[rows["training_family"].astype(bool)]
    if rows.empty:
        raise UserError(f"the table has no finished {learner!r} rows with metric {metric!r}")
    return rows


def _check_keys(frame, keys: Sequence[str]) -> None:
    for k in keys:
        if k not in frame.columns:
            raise UserError(f"{k!r} is not a column of the table (a grid key of the sweep)")


def _seed_mean(rows, keys: list[str]):
    """Per (keys, subset, budget): the mean over seeds and its standard error."""
    grouped = rows.groupby([*keys, "subset", "budget"], dropna=False)
    out = grouped.agg(
        mean=("mean", "mean"),
        n=("mean", "count"),
        var=("stderr", lambda s: float(np.sum(np.square(s)))),
    )
    out["se"] = np.sqrt(out["var"]) / out["n"]
    return out.drop(columns=["var"]).reset_index()


def regimes(
    frame,
    keys: Sequence[str],
    *,
    learner: str = "model",
    metric: str = "accuracy",
    margin: float = 0.0,
    z: float = 2.0,
):
    """One row per point (the grid `keys`, seeds averaged): the first and last budget's seen and
    unseen accuracy, their gains with standard errors, and the GPICL regime."""
    import pandas as pd

    keys = list(keys)
    _check_keys(frame, keys)
    if margin < 0:
        raise UserError(f"margin must be >= 0, got {margin}")
    stats = _seed_mean(_rows(frame, learner, metric), keys)
    out = []
    for point, cell in stats.groupby(keys, dropna=False, sort=False):
        point = point if isinstance(point, tuple) else (point,)
        row = dict(zip(keys, point, strict=True))
        subsets = set(cell["subset"])
        for name in ("seen", "unseen"):
            sub = cell[cell["subset"] == (name if name in subsets else "all")]
            if sub.empty:
                raise UserError(f"point {row} has no {name!r} (or 'all') rows")
            sub = sub.sort_values("budget")
            first, last = sub.iloc[0], sub.iloc[-1]
            row[f"{name}_first"] = float(first["mean"])
            row[f"{name}_last"] = float(last["mean"])
            row[f"{name}_last_se"] = float(last["se"])
            row[f"{name}_gain"] = float(last["mean"] - first["mean"])
            # the budgets' errors taken as independent: conservative, as one model's
            # accuracies on the same sequences at two budgets correlate positively
            row[f"{name}_gain_se"] = float(math.hypot(first["se"], last["se"]))
        row["regime"] = regime_of(row, margin=margin, z=z)
        out.append(row)
    return in_grid_order(pd.DataFrame(out), keys)


def regime_of(row: dict, *, margin: float = 0.0, z: float = 2.0) -> str:
    """The GPICL regime from a point's seen/unseen gains and last-budget accuracies."""
    seen_up = row["seen_gain"] > z * row["seen_gain_se"]
    unseen_up = row["unseen_gain"] > z * row["unseen_gain_se"]
    gap = row["seen_last"] - row["unseen_last"]
    as_good = gap <= z * math.hypot(row["seen_last_se"], row["unseen_last_se"]) + margin
    if not unseen_up:
        return TASK if seen_up else INSTANCE
    if not seen_up:
        # seen tasks solved without the context (a pool of one task, memorized, is right from
        # budget 0): context is not what solves them, whatever small gain unseen tasks show
        return LEARNING if as_good else INSTANCE
    return LEARNING if as_good else TRANSITION


def closer_to(
    frame,
    keys: Sequence[str],
    *,
    learner: str = "model",
    a: str = "ridge",
    b: str = "dmmse",
    subset: str = "unseen",
    z: float = 2.0,
):
    """One row per point whose table has both distances (a point without a pool has no
    dMMSE): the model's mean squared distance to `a`'s and to `b`'s predictions on `subset`
    tasks, averaged over budgets >= 1 (at budget 0 every rule predicts from its prior alone),
    which is closer (by the means, as Raventos et al. read it), and whether the difference is
    clear (beyond `z` standard errors)."""
    import pandas as pd

    keys = list(keys)
    _check_keys(frame, keys)
    parts = {}
    for name in (a, b):
        rows = _rows(frame, learner, f"distance_to_{name}")
        rows = rows[(rows["subset"] == subset) & (rows["budget"] >= 1)]
        if rows.empty:
            raise UserError(f"the table has no {subset!r} distance_to_{name} rows at budget >= 1")
        stats = _seed_mean(rows, keys)
        parts[name] = stats.groupby(keys, dropna=False).agg(
            mean=("mean", "mean"), se=("se", lambda s: float(np.sqrt(np.sum(s**2))) / len(s))
        )
    both = parts[a].add_suffix(f"_{a}").join(parts[b].add_suffix(f"_{b}"), how="inner")
    out = []
    for point, r in both.iterrows():
        point = point if isinstance(point, tuple) else (point,)
        da, db = r[f"mean_{a}"], r[f"mean_{b}"]
        se = math.hypot(r[f"se_{a}"], r[f"se_{b}"])
        out.append(
            {
                **dict(zip(keys, point, strict=True)),
                f"distance_to_{a}": float(da),
                f"distance_to_{b}": float(db),
                "difference_se": float(se),
                "closer": a if da < db else b,
                # as the pool grows dMMSE tends to ridge, so their distances meet: a small
                # difference there is expected, and reported rather than counted against
                "clear": bool(abs(da - db) > z * se),
            }
        )
    return in_grid_order(pd.DataFrame(out), keys)


def in_grid_order(frame, keys: Sequence[str]):
    """Rows sorted by each key in `order_values` order (numbers ascending, 'none' last)."""
    if frame.empty:
        return frame
    ranks = {k: {v: i for i, v in enumerate(order_values(frame[k]))} for k in keys}
    return frame.sort_values(
        list(keys), key=lambda col: col.astype(str).map(ranks[col.name]), kind="stable"
    ).reset_index(drop=True)


def threshold(
    labels, over: str, by: Sequence[str] = (), *, holds: Callable[[dict], bool]
) -> dict[tuple, str | None]:
    """For each combination of the `by` columns: the smallest value of `over` (pool sizes in
    numeric order, 'none' last) from which `holds(row)` is true at that value and every larger
    one; None when it fails at the largest. Values missing from the table are skipped."""
    by = list(by)
    _check_keys(labels, [over, *by])
    out: dict[tuple, str | None] = {}
    groups = labels.groupby(by, dropna=False, sort=False) if by else [((), labels)]
    for group, rows in groups:
        group = group if isinstance(group, tuple) else (group,)
        found = None
        cells = {str(r[over]): r for r in rows.to_dict("records")}
        for value in reversed(order_values(cells)):
            if not holds(cells[value]):
                break
            found = value
        out[group] = found
    return out


def is_learning(row: dict) -> bool:
    return row["regime"] == LEARNING

"""Figures of a sweep's table: a heat map over two grid keys (a phase diagram), curves with
error bars over one, each at one budget (the last by default)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from metalearn.core.errors import UserError
from metalearn.core.files import atomic_write
from metalearn.transitions import order_values

# per-point columns of the table that can be plotted like a metric (one value per point)
POINT_COLUMNS = (
    "final_train_loss",
    "plateau_steps",
    "eval_plateau_steps",
    "train_flops",
    "wall_s",
    "steps_per_s",
)


def tick_label(value: str, powers_of_two: bool) -> str:
    if value == "none":
        return "∞"
    if powers_of_two:
        return f"2^{int(math.log2(float(value)))}"
    return value


def is_powers_of_two(values: list[str]) -> bool:
    numbers = []
    for v in values:
        if v == "none":
            continue
        try:
            numbers.append(float(v))
        except ValueError:
            return False
    return len(numbers) > 2 and all(n >= 1 and math.log2(n).is_integer() for n in numbers)


def select(
    frame,
    *,
    learner: str = "model",
    metric: str | None = None,
    subset: str | None = None,
    budget: int | None = None,
    family: str | None = None,
):
    """The rows of one learner, metric, subset, family and budget, and what was chosen; a
    point's own column (`POINT_COLUMNS`, e.g. plateau_steps) as the metric gives one row per
    point instead."""
    done = frame[frame["status"] == "done"]
    if done.empty:
        raise UserError("the sweep has no finished point to plot")
    if metric in POINT_COLUMNS and metric in done.columns:
        rows = done.drop_duplicates("point")
        rows = rows.assign(mean=rows[metric].astype(float), stderr=np.nan)
        return rows, {"learner": "training", "metric": metric, "subset": None, "budget": None}

    def pick(column: str, value, default):
        allowed = sorted(done[column].dropna().unique().tolist(), key=str)
        chosen = default(allowed) if value is None else value
        if chosen not in allowed:
            raise UserError(f"{column} {chosen!r} is not in the table; it has {allowed}")
        return chosen

    learner = pick("learner", learner, lambda a: a[0])
    rows = done[done["learner"] == learner]
    metric = pick("metric", metric, lambda a: a[0])
    subset = pick("subset", subset, lambda a: "unseen" if "unseen" in a else a[0])
    # a point without a pool draws fresh tasks ('all'): those are unseen tasks too
    subsets = {"unseen", "all"} if subset == "unseen" else {subset}
    rows = rows[(rows["metric"] == metric) & rows["subset"].isin(subsets)]
    if family is not None:
        rows = rows[rows["family"] == pick("family", family, None)]
    elif rows["training_family"].any():  # each point on its own training family
        rows = rows[rows["training_family"]]
    else:
        rows = rows[rows["family"] == sorted(rows["family"].unique())[0]]
    if rows.empty:
        raise UserError(f"no finished point has {learner} {metric} on subset {subset!r}")
    budget = int(rows["budget"].max()) if budget is None else budget
    if budget not in set(rows["budget"]):
        raise UserError(
            f"budget {budget} is not in the table; it has {sorted(set(rows['budget']))}"
        )
    chosen = {"learner": learner, "metric": metric, "subset": subset, "budget": budget}
    return rows[rows["budget"] == budget], chosen


def _axis(column, declared: list) -> list[str]:
    """An axis's values: in numeric order where they are numbers ('none' last), else in the
    grid's own order (a study lists its variants in the order it means them)."""
    present = {str(v) for v in column}
    numeric = order_values(present)
    if all(_is_number(v) for v in numeric if v != "none"):
        return numeric
    return [str(v) for v in declared if str(v) in present] + sorted(
        present - {str(v) for v in declared}
    )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def plot_sweep(
    sweep_dir: str | Path,
    *,
    x: str | None = None,
    y: str | None = None,
    learner: str = "model",
    metric: str | None = None,
    subset: str | None = None,
    budget: int | None = None,
    family: str | None = None,
) -> Path:
    """Write DIR/plot_<metric>_<subset>.png (DIR/plot_<column>.png for a point column) from
    DIR/results.parquet; returns its path.

    By default each point is shown on its own training family (where the table says which),
    on unseen tasks (fresh ones for points without a pool). Points with several seeds show
    their mean over seeds, with the standard error over seeds (one seed: the point's own
    standard error over sequences).
    """
    import pandas as pd

    sweep_dir = Path(sweep_dir)
    table = sweep_dir / "results.parquet"
    if not table.exists():
        raise UserError(f"{str(table)!r} does not exist; run `metalearn sweep` into it first")
    frame = pd.read_parquet(table)
    grid_values = json.loads((sweep_dir / "sweep.json").read_text())["grid"]
    keys = list(grid_values)
    axes = [k for k in (x, y) if k is not None] or keys[:2]
    for k in axes:
        if k not in keys:
            raise UserError(f"{k!r} is not a grid key of this sweep; its keys: {keys}")
    if len(keys) > 2 and (x is None or y is None):
        raise UserError(f"the sweep has {len(keys)} grid keys; choose two with --x and --y")
    rows, chosen = select(
        frame, learner=learner, metric=metric, subset=subset, budget=budget, family=family
    )
    # the mean over seeds (and over grid keys left out) of each cell
    stats = rows.groupby(axes, dropna=False).agg(
        mean=("mean", "mean"),
        seeds=("mean", "count"),
        spread=("mean", "std"),
        se=("stderr", "mean"),
    )
    stats["se"] = np.where(
        stats["seeds"] > 1, stats["spread"] / np.sqrt(stats["seeds"]), stats["se"]
    )

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    what = (
        f"{chosen['learner']} {chosen['metric']} [{chosen['subset']}] at budget {chosen['budget']}"
        if chosen["subset"] is not None
        else chosen["metric"]
    )
    fig, ax = plt.subplots(figsize=(6, 4.5))
    xs = _axis(rows[axes[0]], grid_values[axes[0]])
    x_pow = is_powers_of_two(xs)
    if len(axes) == 1:
        cells = stats.reset_index().set_index(axes[0])
        means = [cells.loc[v, "mean"] for v in xs]
        errors = [cells.loc[v, "se"] for v in xs]
        ax.errorbar(range(len(xs)), means, yerr=errors, marker="o", ms=4, capsize=3)
        ax.set_xticks(range(len(xs)), [tick_label(v, x_pow) for v in xs])
        ax.set_xlabel(axes[0])
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
    else:
        ys = _axis(rows[axes[1]], grid_values[axes[1]])
        y_pow = is_powers_of_two(ys)
        cells = stats.reset_index().set_index(axes)
        grid = np.full((len(ys), len(xs)), np.nan)
        for i, yv in enumerate(ys):
            for j, xv in enumerate(xs):
                if (xv, yv) in cells.index:
                    grid[i, j] = cells.loc[(xv, yv), "mean"]
        image = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis")
        for i in range(len(ys)):
            for j in range(len(xs)):
                if np.isfinite(grid[i, j]):
                    ax.text(
                        j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=7, color="w"
                    )
        ax.set_xticks(range(len(xs)), [tick_label(v, x_pow) for v in xs])
        ax.set_yticks(range(len(ys)), [tick_label(v, y_pow) for v in ys])
        ax.set_xlabel(axes[0])
        ax.set_ylabel(axes[1])
        fig.colorbar(image, ax=ax, label=what)
    ax.set_title(f"{sweep_dir.name}: {what}", fontsize=8)
    fig.tight_layout()
    suffix = f"_{chosen['subset']}" if chosen["subset"] is not None else ""
    out = sweep_dir / f"plot_{chosen['metric']}{suffix}.png"
    atomic_write(out, lambda f: fig.savefig(f, format="png", dpi=110), mode="wb")
    plt.close(fig)
    return out


def plot_logged(
    sweep_dir: str | Path, metrics: list[str], *, panels: str | None = None, smooth: int = 1
) -> Path:
    """Write DIR/logged.png: logged `metrics` (metrics.jsonl keys, e.g. loss and eval/loss)
    of every point against the training step, one panel per value of the grid key `panels`
    (default: the first), one colour per value of the other grid keys, one line style per
    metric; each line a running mean over `smooth` records. Returns its path."""
    import pandas as pd

    from metalearn.meta.logs import read_metrics

    sweep_dir = Path(sweep_dir)
    table = sweep_dir / "results.parquet"
    if not table.exists():
        raise UserError(f"{str(table)!r} does not exist; run `metalearn sweep` into it first")
    if smooth < 1:
        raise UserError(f"--smooth must be a positive number of records, got {smooth}")
    if not 1 <= len(metrics) <= 4:
        raise UserError(f"give 1 to 4 logged metrics (one line style each), got {metrics}")
    grid_values = json.loads((sweep_dir / "sweep.json").read_text())["grid"]
    keys = list(grid_values)
    panels = panels or keys[0]
    if panels not in keys:
        raise UserError(f"{panels!r} is not a grid key of this sweep; its keys: {keys}")
    others = [k for k in keys if k != panels]
    points = pd.read_parquet(table)[[*keys, "point"]].drop_duplicates("point")
    columns = _axis(points[panels], grid_values[panels])

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(len(columns), 4)
    rows = -(-len(columns) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3 * rows), squeeze=False)
    styles = ["-", "--", ":", "-."]
    colours: dict[tuple, str] = {}
    seen: set[str] = set()
    for ax, value in zip(axes.flat, columns, strict=False):
        for _, point in points[points[panels].astype(str) == value].iterrows():
            path = sweep_dir / "points" / point["point"] / "metrics.jsonl"
            records = read_metrics(path) if path.exists() else []
            label = ", ".join(f"{k}={point[k]}" for k in others) or "point"
            colour = colours.setdefault(label, f"C{len(colours) % 10}")
            for style, metric in zip(styles, metrics, strict=False):
                xy = [(r["step"], r[metric]) for r in records if isinstance(r.get(metric), float)]
                if not xy:
                    continue
                seen.add(metric)
                steps, values = np.array(xy).T
                kernel = np.ones(min(smooth, len(values))) / min(smooth, len(values))
                values = np.convolve(values, kernel, mode="valid")
                ax.plot(steps[len(steps) - len(values) :], values, style, color=colour, lw=1)
        ax.set_title(f"{panels}={value}", fontsize=9)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(columns) :]:
        ax.set_visible(False)
    missing = [m for m in metrics if m not in seen]
    if missing:
        plt.close(fig)
        raise UserError(f"metrics {missing} were never logged by any point of this sweep")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c, label=label) for label, c in colours.items()]
    handles += [
        Line2D([], [], color="k", ls=s, label=m) for s, m in zip(styles, metrics, strict=False)
    ]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), fontsize=7)
    fig.tight_layout(rect=(0, 0.08 if rows == 1 else 0.05, 1, 1))
    out = sweep_dir / "logged.png"
    atomic_write(out, lambda f: fig.savefig(f, format="png", dpi=110), mode="wb")
    plt.close(fig)
    return out

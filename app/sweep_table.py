"""A sweep's learners by its families at one budget: GPICL's Table 1 shape.

    metalearn table DIR [--metric accuracy] [--budget 99] [--subset unseen]

One row per trained point (named by its grid settings, and its seed where there are several),
then one per baseline (evaluated in any point: the first point's numbers are shown, since every
point scores a baseline on the same sequences), one column per evaluated family (named by its
base dataset where it has one). Cells are mean ± standard error over the evaluation's
sequences. Writes DIR/table.txt.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from metalearn.core.errors import UserError
from metalearn.core.files import atomic_write_text
from metalearn.sweep import SWEEP_FILE

MODEL = "model"


def _without(spec: str, options: set[str]) -> str:
    """The spec less the options a grid varies: a point's evaluation families follow its
    training family's options, and one column should hold them all."""
    name, _, rest = spec.partition(":")
    kept = [o for o in rest.split(",") if o and o.partition("=")[0] not in options]
    return f"{name}:{','.join(kept)}" if kept else name


def _labels(keys: list[str]) -> dict[str, str]:
    """Column names: a family's base dataset where no other column has the same, else its name
    and the options that set it apart."""
    from collections import Counter

    from metalearn import data
    from metalearn.meta.results import short_names

    bases = {k: data.parse_spec(k)[1].get("base") for k in keys}
    count = Counter(bases.values())
    short = short_names(keys)
    return {k: str(b) if b is not None and count[b] == 1 else short[k] for k, b in bases.items()}


def _read(sweep_dir: Path) -> tuple[dict, pd.DataFrame]:
    record_path = sweep_dir / SWEEP_FILE
    table_path = sweep_dir / "results.parquet"
    if not record_path.exists() or not table_path.exists():
        raise UserError(f"{str(sweep_dir)!r} is not a finished sweep directory (no {SWEEP_FILE})")
    frame = pd.read_parquet(table_path)
    if "learner" not in frame:
        raise UserError(f"sweep {str(sweep_dir)!r} has no evaluated point")
    return json.loads(record_path.read_text()), frame.dropna(subset=["learner"])


def learner_table(
    sweep_dir: str | Path,
    metric: str = "accuracy",
    budget: int | None = None,
    subset: str | None = None,
) -> str:
    """The table as text (also written to DIR/table.txt); `budget` None: each family's last,
    `subset` None: unseen where a family has it, else all."""
    sweep_dir = Path(sweep_dir)
    record, frame = _read(sweep_dir)
    if metric not in set(frame["metric"]):
        have = sorted(set(frame["metric"]))
        raise UserError(f"--metric {metric!r} is not in the sweep; it has {have}")
    frame = frame[frame["metric"] == metric]
    grid = list(record["grid"])
    several_seeds = frame["seed"].nunique() > 1

    def row_name(r) -> str:
        if r["learner"] != MODEL:
            return str(r["learner"])
        name = ",".join(str(r[k]) if len(grid) == 1 else f"{k}={r[k]}" for k in grid)
        return f"{name} (seed {r['seed']})" if several_seeds else name

    varied = {k.partition(".")[2] for k in grid if k.startswith("family.")}
    frame = frame.assign(column=[_without(f, varied) for f in frame["family"]])
    rows: dict[str, dict[str, str]] = {}
    budgets: dict[str, int] = {}
    for family, part in frame.groupby("column", sort=False):
        subsets = set(part["subset"])
        chosen = subset or ("unseen" if "unseen" in subsets else "all")
        part = part[part["subset"] == chosen]
        if part.empty:
            continue
        at = budget if budget is not None else int(part["budget"].max())
        part = part[part["budget"] == at]
        if part.empty:
            raise UserError(
                f"--budget {at} was not evaluated on {family}; budgets there: "
                f"{sorted(set(frame[frame['column'] == family]['budget']))}"
            )
        budgets[family] = at
        for _, r in part.iterrows():
            cells = rows.setdefault(row_name(r), {})
            cells.setdefault(family, f"{r['mean']:.3f} ± {r['stderr']:.3f}")
    if not rows:
        raise UserError(f"no {metric} rows for subset {subset!r} in {str(sweep_dir)!r}")
    columns = {
        f: f"{label} @{budgets[f]}" if budget is None else label
        for f, label in _labels(list(budgets)).items()
    }
    trained = set(frame.loc[frame["learner"] == MODEL].apply(row_name, axis=1))
    # the trained points first, in the sweep's order, then the baselines
    rows = {n: rows[n] for n in sorted(rows, key=lambda n: n not in trained)}
    width = max(len(n) for n in rows)
    cell = max(len(c) for c in [*columns.values(), "0.000 ± 0.000"])
    shown = f"budget {budget}" if budget is not None else "each family's last budget"
    lines = [
        f"{metric} at {shown} (mean ± standard error over sequences); {record['experiment']}",
        f"{'':<{width}}  " + "  ".join(f"{c:>{cell}}" for c in columns.values()),
    ]
    for name, cells in rows.items():
        lines.append(
            f"{name:<{width}}  " + "  ".join(f"{cells.get(f, '-'):>{cell}}" for f in columns)
        )
    text = "\n".join(lines)
    atomic_write_text(sweep_dir / "table.txt", text + "\n")
    return text

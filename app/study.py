"""A sweep directory read as a transition study: regime labels or the ridge/dMMSE reading per
point, the threshold pool size per setting of the other grid keys, a labelled phase diagram.

    metalearn transitions DIR [--kind regimes|closer] [--over KEY] [--by KEY ...]

The reading comes from the options, else from the sweep's experiment (`SWEEP["analysis"]`),
else it is GPICL's regimes over `family.num_tasks` (or the first grid key) by the other keys.
Writes DIR/transitions.json, DIR/transitions.txt and DIR/phase_<kind>.png.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from metalearn import transitions as tr
from metalearn.core.errors import UserError
from metalearn.core.files import atomic_write, atomic_write_text
from metalearn.sweep_plot import is_powers_of_two, tick_label

KINDS = ("regimes", "closer")
SHORT = {tr.INSTANCE: "IM", tr.TASK: "TM", tr.TRANSITION: "TR", tr.LEARNING: "LL"}


@dataclass(frozen=True)
class Analysis:
    kind: str
    over: str
    by: list[str]
    labels: Any  # a DataFrame, one row per point
    thresholds: dict[str, str | None]  # the by-settings, as text -> threshold value
    text: str
    figure: Path


def _reading(sweep_dir: Path, record: dict, options: dict[str, Any]) -> dict[str, Any]:
    """The analysis settings: the options given, else the experiment's, else the defaults."""
    from metalearn import runs

    grid = list(record["grid"])
    try:
        module = runs.experiment_module(record["experiment"])
        declared = dict((getattr(module, "SWEEP", None) or {}).get("analysis") or {})
    except UserError:
        declared = {}
    unknown = sorted(set(declared) - {"kind", "over", "by", "margin", "metric"})
    if unknown:
        raise UserError(f"SWEEP['analysis'] has unknown entries {unknown}")
    given = {k: v for k, v in options.items() if v is not None}
    if "over" in given and "by" not in given:
        declared.pop("by", None)  # another pool key: the others become the settings
    reading = {**declared, **given}
    reading.setdefault("kind", "regimes")
    if reading["kind"] not in KINDS:
        raise UserError(f"--kind must be one of {', '.join(KINDS)}, got {reading['kind']!r}")
    reading.setdefault("over", "family.num_tasks" if "family.num_tasks" in grid else grid[0])
    if reading["over"] not in grid:
        raise UserError(f"--over {reading['over']!r} is not a grid key of this sweep ({grid})")
    reading["by"] = list(reading.get("by") or [k for k in grid if k != reading["over"]])
    for k in reading["by"]:
        if k not in grid or k == reading["over"]:
            raise UserError(f"--by {k!r} must be another grid key of this sweep ({grid})")
    reading.setdefault("margin", 0.0)
    reading.setdefault("metric", "accuracy")
    return reading


def analyze_sweep(
    sweep_dir: str | Path,
    *,
    kind: str | None = None,
    over: str | None = None,
    by: list[str] | None = None,
    margin: float | None = None,
) -> Analysis:
    """Label every finished point, find the thresholds, write the files; see the module doc."""
    import pandas as pd

    sweep_dir = Path(sweep_dir)
    table = sweep_dir / "results.parquet"
    if not table.exists():
        raise UserError(f"{str(table)!r} does not exist; run `metalearn sweep` into it first")
    record = json.loads((sweep_dir / "sweep.json").read_text())
    r = _reading(sweep_dir, record, {"kind": kind, "over": over, "by": by, "margin": margin})
    frame = pd.read_parquet(table)
    keys = [r["over"], *r["by"]]
    if r["kind"] == "regimes":
        labels = tr.regimes(frame, keys, metric=r["metric"], margin=float(r["margin"]))
        holds, what = tr.is_learning, "learning-to-learn"
    else:
        labels = tr.closer_to(frame, keys)
        holds, what = (lambda row: row["closer"] == "ridge"), "closer to ridge than to dMMSE"
    found = tr.threshold(labels, r["over"], r["by"], holds=holds)
    thresholds = {_setting(r["by"], g): v for g, v in found.items()}

    lines = [labels.to_string(index=False, float_format=lambda v: f"{v:.4f}"), ""]
    for setting, value in thresholds.items():
        where = f" ({setting})" if setting else ""
        if value is None:
            lines.append(
                f"threshold{where}: none within the grid (the largest {r['over']} is not {what})"
            )
        else:
            lines.append(f"threshold{where}: {r['over']} = {value} ({what} from there on)")
    text = "\n".join(lines)
    figure = sweep_dir / f"phase_{r['kind']}.png"
    _figure(figure, labels, r, thresholds, sweep_dir.name)
    payload = {
        "reading": r,
        "thresholds": thresholds,
        "labels": json.loads(labels.to_json(orient="records")),
    }
    atomic_write_text(sweep_dir / "transitions.json", json.dumps(payload, indent=1) + "\n")
    atomic_write_text(sweep_dir / "transitions.txt", text + "\n")
    return Analysis(r["kind"], r["over"], r["by"], labels, thresholds, text, figure)


def _setting(by: list[str], values: tuple) -> str:
    return ", ".join(f"{k}={v}" for k, v in zip(by, values, strict=True))


def _figure(path: Path, labels, r: dict, thresholds: dict, title: str) -> None:
    """Regimes: a heat map of unseen-task accuracy at the last budget over (over, by), each
    cell labelled with its regime. Closer: the two distances against `over`, per setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = tr.order_values(labels[r["over"]])
    powers = is_powers_of_two(xs)
    rows = labels.assign(
        _setting=[_setting(r["by"], tuple(v)) for v in labels[r["by"]].itertuples(index=False)]
        if r["by"]
        else ""
    )
    settings = list(dict.fromkeys(rows["_setting"]))
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(xs) + 2), max(3, 0.6 * len(settings) + 2)))
    if r["kind"] == "regimes":
        grid = np.full((len(settings), len(xs)), np.nan)
        for row in rows.to_dict("records"):
            i, j = settings.index(row["_setting"]), xs.index(str(row[r["over"]]))
            grid[i, j] = row["unseen_last"]
            ax.text(j, i, SHORT[row["regime"]], ha="center", va="center", fontsize=7, color="w")
        image = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis")
        fig.colorbar(image, ax=ax, label=f"unseen-task {r['metric']}, last budget")
        ax.set_yticks(range(len(settings)), settings or [""], fontsize=7)
        for i, s in enumerate(settings):
            if thresholds.get(s) is not None:
                ax.axvline(
                    xs.index(thresholds[s]) - 0.5,
                    ymin=i / len(settings),
                    ymax=(i + 1) / len(settings),
                    color="r",
                    lw=2,
                )
        ax.set_title(
            f"{title}: IM instance memorization, TM task memorization, TR transition, "
            "LL learning-to-learn; red: threshold",
            fontsize=7,
        )
    else:
        for k, s in enumerate(settings):
            sub = rows[rows["_setting"] == s]
            at = [xs.index(str(v)) for v in sub[r["over"]]]
            for name, style in (("ridge", "-"), ("dmmse", "--")):
                ax.plot(
                    at,
                    sub[f"distance_to_{name}"],
                    style,
                    marker="o",
                    ms=3,
                    color=f"C{k}",
                    label=f"to {name}" + (f" ({s})" if s else ""),
                )
            if thresholds.get(s) is not None:
                ax.axvline(xs.index(thresholds[s]), color=f"C{k}", lw=0.8, alpha=0.6)
        ax.set_yscale("log")
        ax.set_ylabel("model's squared distance, fresh tasks")
        ax.legend(fontsize=7)
        ax.set_title(f"{title}: vertical lines mark the thresholds", fontsize=8)
    ax.set_xticks(range(len(xs)), [tick_label(v, powers) for v in xs])
    ax.set_xlabel(r["over"])
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110), mode="wb")
    plt.close(fig)

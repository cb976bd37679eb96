"""Results as files: a JSON list of curve records, a PNG of the curves or of logged metrics
over training, a text table."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from metalearn.core.errors import UserError
from metalearn.core.files import atomic_write, atomic_write_text
from metalearn.meta.compare import DISTANCE
from metalearn.meta.evaluate import Curve, Curves


def write_json(curves: Curves, path: Path) -> None:
    """The records, as strict JSON (no NaN), written atomically."""
    text = json.dumps(curves.to_records(), indent=1, allow_nan=False)
    atomic_write_text(Path(path), text + "\n")


def read_json(path: Path) -> list[dict[str, Any]]:
    return json.loads(Path(path).read_text())


def read_curves(path: Path) -> Curves:
    """The curves of a results file written by `write_json` (without per-sequence values)."""
    try:
        records = read_json(path)
        return Curves(tuple(Curve.from_record(r) for r in records))
    except FileNotFoundError:
        raise UserError(f"results file {str(path)!r} does not exist") from None
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{str(path)!r} is not a results file of curve records ({e})") from None


def _num(v: float) -> str:
    return f"{v:.3f}" if abs(v) < 100 else f"{v:.4g}"


def table(curves: Curves, budgets: Sequence[int] | None = None) -> str:
    """Plain-text table: one row per (family, subset, learner), one column per budget."""
    rows = list(curves)
    if not rows:
        return "(no curves)"
    budgets = list(budgets) if budgets is not None else list(rows[0].budget)
    lines = []
    groups: dict[tuple[str, str, str], list] = {}
    for c in rows:
        groups.setdefault((c.family, c.subset, c.metric), []).append(c)
    for (family, subset, metric), group in groups.items():
        over = "runs" if group[0].budget_unit == "steps" else "sequences"
        lines.append(
            f"{family} [{subset}] {metric} (mean ± stderr over {group[0].num_sequences} {over})"
        )
        width = max(len(c.learner) for c in group) + 2
        head = "budget".ljust(width) + "".join(f"{b:>16d}" for b in budgets)
        lines.append(head)
        for c in group:
            cells = []
            for b in budgets:
                if b in c.budget:
                    i = c.budget.index(b)
                    cells.append(f"{_num(c.mean[i])}±{_num(c.stderr[i])}".rjust(16))
                else:
                    cells.append(" " * 16)
            lines.append(c.learner.ljust(width) + "".join(cells))
        lines.append("")
    return "\n".join(lines)


PANELS_PER_ROW = 4


def short_names(specs: Sequence[str], limit: int = 60) -> dict[str, str]:
    """Each spec `name:k=v,...` shown by its name and the options whose value differs from
    the value most specs given have for that key (the full spec where that would not tell two
    apart), cut at `limit`."""
    parts = {s: s.partition(":") for s in specs}
    options = {s: [o for o in p[2].split(",") if o] for s, p in parts.items()}
    counts = Counter(o for opts in options.values() for o in opts)
    usual: dict[str, str] = {}
    for option, _ in counts.most_common():  # the most common value of each key first
        usual.setdefault(option.partition("=")[0], option)
    out = {}
    for s, (name, _, _) in parts.items():
        kept = [o for o in options[s] if usual[o.partition("=")[0]] != o]
        out[s] = f"{name}:{','.join(kept)}" if kept else name
    if len(set(out.values())) < len(out):
        out = {s: s for s in specs}
    return {s: v if len(v) <= limit else v[: limit - 3] + "..." for s, v in out.items()}


def plot(curves: Curves, path: Path, title: str | None = None) -> None:
    """One panel per (family, subset, metric), the metric versus budget with standard-error
    bands; at most PANELS_PER_ROW panels a row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: dict[tuple[str, str, str], list] = {}
    for c in curves:
        panels.setdefault((c.family, c.subset, c.metric), []).append(c)
    titles = short_names([family for family, _, _ in panels])
    n = max(len(panels), 1)
    cols = min(n, PANELS_PER_ROW)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.8 * cols, 3.8 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    for ax, ((family, subset, metric), group) in zip(axes.flat, panels.items(), strict=False):
        for c in group:
            mean = [m if m is not None else float("nan") for m in c.mean]
            lo = [m - s for m, s in zip(mean, c.stderr, strict=True)]
            hi = [m + s for m, s in zip(mean, c.stderr, strict=True)]
            ax.plot(c.budget, mean, marker="o", ms=3, label=c.learner)
            ax.fill_between(c.budget, lo, hi, alpha=0.2)
        if metric == "mse" or metric.startswith(DISTANCE):
            ax.set_yscale("log")
        ax.set_xlabel(f"budget ({group[0].budget_unit} seen)")
        ax.set_ylabel(metric)
        ax.set_title(f"{titles[family]}\n[{subset}]", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    atomic_write(Path(path), lambda f: fig.savefig(f, format="png", dpi=110), mode="wb")
    plt.close(fig)


def plot_training(
    records: Sequence[dict[str, Any]], keys: Sequence[str], path: Path, title: str | None = None
) -> None:
    """The logged metrics `keys` (from metrics.jsonl's records) against the training step, one
    line each; a key never logged is an error naming the keys there are."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logged = sorted({k for r in records for k in r if k != "step"})
    missing = [k for k in keys if k not in logged]
    if missing:
        raise UserError(f"metrics {missing} were never logged; logged: {logged}")
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in keys:
        points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), float | int)]
        ax.plot(*zip(*points, strict=True), marker="o", ms=2, label=key)
    ax.set_xlabel("training step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    atomic_write(Path(path), lambda f: fig.savefig(f, format="png", dpi=110), mode="wb")
    plt.close(fig)

"""Metrics: one JSON object per line in metrics.jsonl, optionally mirrored to TensorBoard."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from metalearn.core.errors import UserError
from metalearn.core.files import atomic_write_text


def _clean(value: Any) -> Any:
    value = float(value) if hasattr(value, "__float__") and not isinstance(value, bool) else value
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # keep the file valid JSON
    return value


class MetricsLog:
    """Appends `{"step": s, ...}` records (s = steps done); on resume from the checkpoint after
    step s, drops the records of later steps, which the resumed run redoes."""

    def __init__(
        self, path: Path, *, resume_from: int | None = None, tensorboard: Path | None = None
    ):
        self.path = Path(path)
        if resume_from is not None and self.path.exists():
            records, torn = _parse(self.path)
            if torn:
                print(
                    f"metalearn: {self.path} ended in a torn line (an interrupted write); "
                    "dropped it",
                    file=sys.stderr,
                )
            kept = [r for r in records if r.get("step", 0) <= resume_from]
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        elif resume_from is None and self.path.exists():
            self.path.unlink()
        self._file = self.path.open("a")
        self._tb = None
        if tensorboard is not None:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:
                raise UserError(
                    "loop.tensorboard=true needs tensorboardX: pip install 'metalearn[tensorboard]'"
                ) from None
            self._tb = SummaryWriter(str(tensorboard))

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        record = {"step": int(step), **{k: _clean(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, float):
                    self._tb.add_scalar(k, v, step)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All records of a metrics.jsonl file (a torn last line, from a write cut short by a
    crash or a full disk, is left out)."""
    return _parse(Path(path))[0]


def _parse(path: Path) -> tuple[list[dict[str, Any]], bool]:
    """The records of a metrics file, and whether its last line was torn."""
    lines = [(i, line) for i, line in enumerate(path.read_text().splitlines(), 1) if line.strip()]
    records = []
    for n, (i, line) in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if n == len(lines) - 1:
                return records, True
            raise UserError(f"{str(path)!r} line {i} is not a JSON record: {line[:80]!r}") from None
    return records, False


PLATEAU_MARGIN = 0.1


def plateau_length(
    records: list[dict[str, Any]], margin: float = PLATEAU_MARGIN, key: str = "loss"
) -> int | None:
    """The length of the initial loss plateau (Kirsch et al. 2022, Sec. 4.4): the step of the
    first record whose `key` (the training loss; `eval/loss` for the periodic probe's loss on
    fresh tasks) is at most (1 - margin) times the first record's, or None while it never is.
    Its resolution is the log interval (`loop.log_every`, or `loop.eval_every`)."""
    if not 0.0 < margin < 1.0:
        raise UserError(f"the plateau margin must be a fraction in (0, 1), got {margin}")
    losses = [(r["step"], r[key]) for r in records if isinstance(r.get(key), float)]
    if not losses:
        return None
    level = (1.0 - margin) * losses[0][1]
    return next((step for step, loss in losses if loss <= level), None)

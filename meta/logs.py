"""Metrics: one JSON object per line in metrics.jsonl, optionally mirrored to TensorBoard."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

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
            kept = [
                line
                for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= resume_from
            ]
            atomic_write_text(self.path, "".join(line + "\n" for line in kept))
        elif resume_from is None and self.path.exists():
            self.path.unlink()
        self._file = self.path.open("a")
        self._tb = None
        if tensorboard is not None:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:
                from metalearn.core.errors import UserError

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
    """All records of a metrics.jsonl file."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]

"""metalearn: meta-learning general-purpose learners in JAX.

One import name holds every floor (see docs/architecture.md):

- `metalearn.core`: errors, typed `key=value` parsing, atomic files (imports nothing of ours);
- `metalearn.data`: task families;
- `metalearn.meta`: the backbone (protocols, loop, estimators, truncated unrolls, evaluation);
- `metalearn.icl` and `metalearn.lopt`: in-context learners and learned optimizers;
- `metalearn.experiments`: one config per study;
- `metalearn.cli`, `metalearn.runs`, `metalearn.learners`: the application layer.

The names below are loaded on first use, so `import metalearn.data` pulls in no training code.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> the module that defines it
_LAZY = {
    "train": "metalearn.runs",
    "load": "metalearn.runs",
    "make_config": "metalearn.runs",
    "Run": "metalearn.runs",
    "evaluate": "metalearn.meta.evaluate",
    "Curve": "metalearn.meta.evaluate",
    "Curves": "metalearn.meta.evaluate",
    "UserError": "metalearn.core.errors",
    "NonFiniteError": "metalearn.core.errors",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip this hook
        return value
    raise AttributeError(f"module 'metalearn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

"""Runnable studies: each module defines a frozen `Config` whose `setup()` the backbone trains."""

import pkgutil


def names() -> list[str]:
    """The studies' module names, found without importing them (benchmarks left out)."""
    return sorted(
        m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith(("_", "bench"))
    )

"""The floors: every module imports only the floors below it (docs/architecture.md).

The walk reads the source (imports inside functions included, and `importlib.import_module`
of a literal module path), so an edge cannot hide behind a lazy import.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import metalearn

# floor -> the floors it may import (itself included)
ALLOWED = {
    "core": {"core"},
    "data": {"core", "data"},
    "meta": {"core", "meta"},
    "icl": {"core", "data", "meta", "icl"},
    "lopt": {"core", "data", "meta", "lopt"},
    "experiments": {"core", "data", "meta", "icl", "lopt", "experiments"},
    "app": {"core", "data", "meta", "icl", "lopt", "experiments", "app"},
}
SUBPACKAGES = ("core", "data", "meta", "icl", "lopt", "experiments")
PACKAGE_ROOT = Path(metalearn.__file__).resolve().parent  # app/, the `metalearn` package
REPO = PACKAGE_ROOT.parent


def floor_of(module: str) -> str | None:
    """The floor of a metalearn module name; None outside metalearn."""
    parts = module.split(".")
    if parts[0] != "metalearn":
        return None
    if len(parts) > 1 and parts[1] in SUBPACKAGES:
        return parts[1]
    return "app"


def modules() -> dict[str, Path]:
    """Every module of the installed package, by its import name."""
    out = {}
    for floor_dir, package in [(PACKAGE_ROOT, "metalearn")] + [
        (REPO / sub, f"metalearn.{sub}") for sub in SUBPACKAGES
    ]:
        for path in sorted(floor_dir.glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            out[name] = path
    return out


def imported(module: str, path: Path) -> set[str]:
    """Absolute names of everything `path` imports, anywhere in the file."""
    package = module if path.stem == "__init__" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)  # `from pkg import module`
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
            and node.args
        ):
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                names.add(arg.value)
            elif isinstance(arg, ast.JoinedStr) and isinstance(arg.values[0], ast.Constant):
                names.add(str(arg.values[0].value).rstrip("._"))
    return names


def test_the_walk_sees_every_floor():
    found = {floor_of(m) for m in modules()}
    assert found == set(ALLOWED)
    assert len(modules()) > 40


def test_no_import_breaks_the_floors():
    known = modules()
    broken = []
    for module, path in known.items():
        here = floor_of(module)
        for name in imported(module, path):
            if name == "metalearn":  # the facade: loads nothing until asked (test below)
                continue
            there = floor_of(name)
            # `from metalearn.data import Batch` names an attribute, not a module: judge the
            # package it comes from
            if there is None or (name not in known and name.rpartition(".")[0] not in known):
                continue
            if there not in ALLOWED[here]:
                broken.append(f"{module} ({here}) imports {name} ({there})")
    assert not broken, "\n".join(broken)


@pytest.mark.parametrize("package", ["metalearn", "metalearn.core", "metalearn.data"])
def test_light_floors_load_no_training_stack(package):
    """The ground floor and the task families load no optax, orbax or flax."""
    code = (
        f"import sys, {package}; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'optax', 'orbax', 'flax'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_rank_promotion_is_explicit_under_test():
    """conftest turns implicit rank promotion into an error, so every broadcast the library
    makes between arrays of different ranks is written out."""
    import jax.numpy as jnp

    with pytest.raises(ValueError, match="rank_promotion"):
        jnp.ones((2, 3)) + jnp.ones(3)

"""Run directories: train an experiment into one, load one back as a learner.

This module finds experiments by name (`metalearn.experiments.<name>`, or any importable
module path such as a user's `my_project.my_experiment`), so it belongs to the application
layer, beside the command line, not to the backbone.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import pkgutil
import shutil
from pathlib import Path
from typing import Any

import jax

from metalearn.core import config as cfglib
from metalearn.core.errors import UserError
from metalearn.core.files import atomic_write_text
from metalearn.meta.evaluate import Curves, Learner
from metalearn.meta.experiment import Setup
from metalearn.meta.loop import TrainResult, TrainState, initial_state, meta_train
from metalearn.meta.objective import Theta

CONFIG_FILE = "config.json"
DEFAULT_EXPERIMENT = "quickstart"


EXPERIMENTS = "metalearn.experiments"
# run directories written before the one import namespace name their experiment this way
_OLD_PREFIX = "experiments."


def _module_path(name: str) -> str:
    if "." not in name:
        return f"{EXPERIMENTS}.{name}"
    if name.startswith(_OLD_PREFIX):
        return f"metalearn.{name}"
    return name


def experiment_module(name: str):
    """The module of experiment `name`: `metalearn.experiments.<name>`, or a dotted module
    path."""
    path = _module_path(name)
    try:
        module = importlib.import_module(path)
    except ModuleNotFoundError as e:
        if e.name not in (path, path.rpartition(".")[0]):
            raise
        raise UserError(
            f"unknown experiment {name!r}; available: {', '.join(list_experiments())}"
        ) from None
    if not hasattr(module, "Config"):
        raise UserError(f"module {path!r} is not an experiment (it defines no Config)")
    return module


def list_experiments() -> list[str]:
    from metalearn import experiments

    return sorted(
        m.name
        for m in pkgutil.iter_modules(experiments.__path__)
        if not m.name.startswith("_")
        and not m.name.startswith("bench")
        and hasattr(importlib.import_module(f"experiments.{m.name}"), "Config")
    )


def default_run_dir(experiment: str) -> Path:
    """runs/<experiment> (the last part of a dotted module path)."""
    return Path("runs") / experiment.rpartition(".")[2]


def make_config(name: str = DEFAULT_EXPERIMENT, overrides: list[str] | None = None) -> Any:
    """The experiment's default config with `key=value` overrides applied."""
    return cfglib.override(experiment_module(name).Config(), overrides or [])


@dataclasses.dataclass
class Run:
    """A trained run: its directory, config, meta-parameters and setup."""

    run_dir: Path
    config: Any
    theta: Theta
    setup: Setup
    curves: Curves | None = None

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def learner(self) -> Learner:
        return self.setup.learner(self.theta, self.name)


def train(
    config: Any,
    out: str | Path | None = None,
    *,
    resume: bool = False,
    force: bool = False,
    report: bool = True,
) -> Run:
    """Meta-train `config` (an experiment's Config) into a run directory, then run its report.

    An existing, non-empty run directory needs `resume=True` (continue exactly where its last
    checkpoint left off; `config` may then be None for the saved one, else it must equal it)
    or `force=True` (start over). The default directory is runs/<experiment>.
    """
    if resume and force:
        raise UserError("choose one of --resume (continue the run) or --force (start over)")
    if config is None and not (resume and out is not None):
        raise UserError("a config is needed unless resuming a given run directory")
    run_dir = Path(out) if out is not None else default_run_dir(type(config).__module__)
    if resume:
        record = _read_record(run_dir)
        saved = cfglib.from_dict(experiment_module(record["experiment"]).Config, record["config"])
        if config is not None and cfglib.to_dict(config) != record["config"]:
            changed = sorted(_diff(cfglib.to_dict(config), record["config"]))
            raise UserError(
                f"cannot resume {str(run_dir)!r} with a different config (changed: "
                f"{', '.join(changed)}); resume without --set to use the saved one"
            )
        config = saved
    elif run_dir.exists() and any(run_dir.iterdir()):
        if not force:
            raise UserError(
                f"run directory {str(run_dir)!r} already exists; pass --resume to continue it "
                "or --force to start over"
            )
        shutil.rmtree(run_dir)
    setup = config.setup()  # validates the config before anything is written
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        record = {"experiment": type(config).__module__, "config": cfglib.to_dict(config)}
        atomic_write_text(run_dir / CONFIG_FILE, json.dumps(record, indent=1) + "\n")
    result: TrainResult = meta_train(
        setup.init,
        setup.estimator,
        setup.optim,
        setup.loop,
        run_dir,
        resume=resume,
        periodic_eval=setup.periodic_eval,
    )
    run = Run(run_dir, config, result.theta, setup)
    if report and setup.report is not None:
        run.curves = setup.report(result.theta, run_dir, run.name)
    return run


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = []
    for k in set(a) | set(b):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            keys += _diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            keys.append(prefix + k)
    return keys


def _read_record(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / CONFIG_FILE
    try:
        record = json.loads(path.read_text())
        return {"experiment": record["experiment"], "config": record["config"]}
    except FileNotFoundError:
        raise UserError(f"{str(run_dir)!r} is not a run directory (no {CONFIG_FILE})") from None
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise UserError(f"cannot read {str(path)!r}: {e}") from None


def load(run_dir: str | Path) -> Run:
    """A run directory's config and its latest checkpoint's meta-parameters."""
    from metalearn.meta.checkpoint import Checkpointer

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"learner {str(run_dir)!r} is neither a baseline nor a run directory")
    record = _read_record(run_dir)
    module = experiment_module(record["experiment"])
    config = cfglib.from_dict(module.Config, record["config"])
    setup = config.setup()
    ckpt_dir = run_dir / "checkpoints"
    ckpt = Checkpointer(ckpt_dir) if ckpt_dir.is_dir() else None
    step = ckpt.latest_step() if ckpt is not None else None
    if step is None:
        raise UserError(f"run {str(run_dir)!r} has no checkpoint yet; train it first")
    like = jax.eval_shape(
        lambda: initial_state(setup.init, setup.estimator, setup.optim, setup.loop)[0]
    )
    state = TrainState(*ckpt.restore(step, tuple(like)))
    ckpt.close()
    return Run(run_dir, config, state.theta, setup)

"""Run directories: train an experiment into one, load one back as a learner.

This module finds experiments by name (`metalearn.experiments.<name>`, or any importable
module path such as a user's `my_project.my_experiment`), so it belongs to the application
layer, beside the command line, not to the backbone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import jax

from metalearn.core import config as cfglib
from metalearn.core.errors import NonFiniteError, UserError
from metalearn.core.files import atomic_write_text
from metalearn.core.lock import LOCK_FILE, FolderLock
from metalearn.meta import distributed
from metalearn.meta.evaluate import Curves, Learner
from metalearn.meta.experiment import Setup
from metalearn.meta.loop import TrainResult, TrainState, initial_state, meta_train
from metalearn.meta.objective import Theta

CONFIG_FILE = "config.json"
DEFAULT_EXPERIMENT = "quickstart"


EXPERIMENTS = "metalearn.experiments"
# run directories written before the one import namespace name their experiment this way
_OLD_PREFIX = "experiments."
# a module loaded from a file path is registered under this prefix and remembers its path
_FILE_PREFIX = "metalearn_user_experiment_"


def _module_path(name: str) -> str:
    if name.endswith(".py"):
        return name
    if "." not in name:
        return f"{EXPERIMENTS}.{name}"
    if name.startswith(_OLD_PREFIX):
        return f"metalearn.{name}"
    return name


def experiment_module(name: str):
    """The module of experiment `name`: `metalearn.experiments.<name>`, a dotted module path
    (importable from `sys.path`, e.g. through PYTHONPATH), or the path of a `.py` file."""
    path = _module_path(name)
    if path.endswith(".py"):
        module = _from_file(Path(path))
    else:
        try:
            module = importlib.import_module(path)
        except ModuleNotFoundError as e:
            if path.startswith(EXPERIMENTS + ".") and e.name == path:
                raise UserError(
                    f"unknown experiment {name!r}; available: {', '.join(list_experiments())}"
                ) from None
            raise UserError(
                f"experiment {name!r} cannot be imported ({e}); give a module importable from "
                "here (add its folder to PYTHONPATH) or the path of its .py file"
            ) from None
    if not hasattr(module, "Config"):
        raise UserError(f"module {path!r} is not an experiment (it defines no Config)")
    return module


def _from_file(path: Path):
    import importlib.util
    import sys

    path = path.resolve()
    if not path.is_file():
        raise UserError(f"experiment file {str(path)!r} does not exist")
    name = _FILE_PREFIX + hashlib.sha1(str(path).encode()).hexdigest()[:12]
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    module.__metalearn_path__ = str(path)
    sys.modules[name] = module  # dataclasses look their module up while the file runs
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[name]
        raise UserError(f"experiment file {str(path)!r} failed to import: {e!r}") from None
    return module


def experiment_name(config: Any) -> str:
    """What a run directory records as its experiment: the module path of the config's class,
    or the file it was loaded from."""
    import sys

    module = sys.modules.get(type(config).__module__)
    return getattr(module, "__metalearn_path__", type(config).__module__)


def list_experiments() -> list[str]:
    from metalearn import experiments

    return [
        name
        for name in experiments.names()
        if hasattr(importlib.import_module(f"{EXPERIMENTS}.{name}"), "Config")
    ]


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
    experiment: str | None = None,
) -> Run:
    """Meta-train `config` (an experiment's Config) into a run directory, then run its report.

    An existing run directory needs `resume=True` (continue exactly where its last intact
    checkpoint left off; `config` may then be None for the saved one, else it must equal it
    outside `eval.*`) or `force=True` (start over). A directory left by a start that failed
    before its first checkpoint is reused. `experiment`, when given, must name the run's
    experiment on resume. The default directory is runs/<experiment>. The directory is locked
    while training (see `metalearn.core.lock`): a second writer gets a UserError.
    """
    if resume and force:
        raise UserError("choose one of --resume (continue the run) or --force (start over)")
    if config is None and not (resume and out is not None):
        raise UserError("a config is needed unless resuming a given run directory")
    run_dir = Path(out) if out is not None else default_run_dir(type(config).__module__)
    check_folder(run_dir, "run directory")
    if resume and not (run_dir / CONFIG_FILE).is_file():
        if config is None or has_checkpoint(run_dir):
            raise UserError(f"{str(run_dir)!r} is not a run directory (no {CONFIG_FILE})")
        resume = False  # killed before it wrote its config: nothing to resume, so start it
    # the whole config, evaluation included, fails before anything is written
    setup = None if resume else config.setup()
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    lead = distributed.is_lead()  # in a multi-host job process 0 holds the lock and writes
    try:
        with FolderLock(run_dir, "metalearn train") if lead else contextlib.nullcontext():
            if resume:
                config = _resumed_config(run_dir, config, experiment)
                setup = config.setup()
            elif has_checkpoint(run_dir) and not force:
                raise UserError(
                    f"run directory {str(run_dir)!r} already exists; pass --resume to continue "
                    "it or --force to start over"
                )
            elif lead:
                _clear(run_dir, force)
            if lead and not resume:
                _write_record(run_dir, config)
            distributed.barrier("metalearn: run directory ready")
            result: TrainResult = meta_train(
                setup.init,
                setup.estimator,
                setup.optim,
                setup.loop,
                run_dir,
                resume=resume,
                periodic_eval=setup.periodic_eval,
            )
            # every process gets the whole parameters; the lead alone evaluates and writes
            run = Run(run_dir, config, distributed.host_copy(result.theta), setup)
            if report and setup.report is not None and lead:
                run.curves = setup.report(run.theta, run_dir, run.name)
            return run
    except UserError:
        # a start refused before its first step leaves nothing behind
        if created and lead and not any(p.name != LOCK_FILE for p in run_dir.iterdir()):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def train_batch(
    configs: list[Any], run_dirs: list[Path], *, report_log: str | None = None
) -> list[Run | NonFiniteError]:
    """Meta-train configs that `meta.batch.batch_key` finds alike as one vmapped model, each
    into its own run directory, then run each one's report (its printed table appended to
    `run_dir/report_log` when given). A directory with a checkpoint resumes from it (every
    member must then stand at the same step), any other starts fresh; each is locked while
    it trains. A member that hit a NaN is its NonFiniteError in the result."""
    from metalearn.meta.batch import meta_train_batch

    for run_dir in run_dirs:
        check_folder(run_dir, "run directory")
    setups = [c.setup() for c in configs]
    resume = [has_checkpoint(d) and (Path(d) / CONFIG_FILE).is_file() for d in run_dirs]
    with contextlib.ExitStack() as stack:
        for config, run_dir, again in zip(configs, run_dirs, resume, strict=True):
            run_dir.mkdir(parents=True, exist_ok=True)
            stack.enter_context(FolderLock(run_dir, "metalearn train"))
            if again:
                _resumed_config(run_dir, config, None)
            else:
                _clear(run_dir, force=True)
                _write_record(run_dir, config)
        results = meta_train_batch(setups, run_dirs, resume=resume)
        out: list[Run | NonFiniteError] = []
        for config, setup, run_dir, result in zip(configs, setups, run_dirs, results, strict=True):
            if isinstance(result, NonFiniteError):
                out.append(result)
                continue
            run = Run(run_dir, config, result.theta, setup)
            if setup.report is not None:
                with contextlib.ExitStack() as quiet:
                    if report_log is not None:
                        log = quiet.enter_context(open(run_dir / report_log, "a"))
                        quiet.enter_context(contextlib.redirect_stdout(log))
                    run.curves = setup.report(result.theta, run_dir, run.name)
            out.append(run)
        return out


# what a run directory may hold; a folder holding anything else is never cleared silently
RUN_FILES = {CONFIG_FILE, "metrics.jsonl", "checkpoints", "tb", "results.json", "curves.png"}
RUN_FILES |= {"table.txt", LOCK_FILE}
# the logs a sweep keeps beside a point's run (open while it trains): a fresh start keeps them
LOG_FILES = {"report.log", "train.log"}
RUN_FILES |= LOG_FILES


def check_folder(path: Path, what: str) -> None:
    """Raise UserError unless `path` is a folder or can be created as one."""
    if path.exists() and not path.is_dir():
        raise UserError(f"{what} {str(path)!r} is a file, not a folder; choose another --out")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(
                    f"cannot create {what} {str(path)!r}: {str(parent)!r} is a file, not a folder"
                )
            if not os.access(parent, os.W_OK | os.X_OK) and not path.exists():
                raise UserError(
                    f"cannot create {what} {str(path)!r}: {str(parent)!r} is not writable"
                )
            break
    if path.is_dir() and not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"{what} {str(path)!r} is not writable")


def has_checkpoint(run_dir: Path) -> bool:
    """Whether a run directory holds a finished checkpoint (a run has really started)."""
    ckpt = Path(run_dir) / "checkpoints"
    return ckpt.is_dir() and any(p.name.isdigit() for p in ckpt.iterdir())


def _clear(run_dir: Path, force: bool) -> None:
    """Empty a run directory for a fresh start, keeping its lock."""
    entries = [p for p in run_dir.iterdir() if p.name not in {LOCK_FILE, *LOG_FILES}]
    strangers = sorted(p.name for p in entries if p.name not in RUN_FILES)
    if strangers and not force:
        raise UserError(
            f"{str(run_dir)!r} holds files that are not a run's ({', '.join(strangers[:3])}); "
            "choose an empty or new --out, or pass --force to delete them"
        )
    for p in entries:
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


def _write_record(run_dir: Path, config: Any) -> None:
    record = {"experiment": experiment_name(config), "config": cfglib.to_dict(config)}
    atomic_write_text(run_dir / CONFIG_FILE, json.dumps(record, indent=1) + "\n")


def _resumed_config(run_dir: Path, config: Any, experiment: str | None) -> Any:
    """The saved config of the run in `run_dir`, after checking `config` and `experiment`
    against it. Only `eval.*` may differ (it does not change training); the record is then
    updated."""
    record = _read_record(run_dir)
    if experiment is not None and _module_path(experiment) != _module_path(record["experiment"]):
        raise UserError(
            f"run {str(run_dir)!r} was trained by experiment {record['experiment']!r}, not "
            f"{experiment!r}; resume it without naming an experiment, or choose another --out"
        )
    saved = cfglib.from_dict(experiment_module(record["experiment"]).Config, record["config"])
    if config is None:
        return saved
    given = cfglib.to_dict(config)
    changed = sorted(_diff(given, record["config"]))
    training = [k for k in changed if not k.startswith(EVAL_PREFIX)]
    if training:
        raise UserError(
            f"cannot resume {str(run_dir)!r} with a different config (changed: "
            f"{', '.join(training)}); resume without --set to use the saved one (only eval.* "
            "may change)"
        )
    if changed:
        _write_record(run_dir, config)
    return config


EVAL_PREFIX = "eval."


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


def load(run_dir: str | Path, eval_overrides: list[str] | None = None) -> Run:
    """A run directory's config and the meta-parameters of its newest intact checkpoint
    (damaged ones are skipped with a line on stderr). `eval_overrides` (`eval.key=value`)
    change the run's evaluation settings, nothing else."""
    import sys

    from metalearn.meta.checkpoint import Checkpointer

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"learner {str(run_dir)!r} is neither a baseline nor a run directory")
    record = _read_record(run_dir)
    try:
        module = experiment_module(record["experiment"])
    except UserError as e:
        raise UserError(f"run {str(run_dir)!r}: {e}") from None
    config = cfglib.from_dict(module.Config, record["config"])
    for text in eval_overrides or []:
        if not text.startswith(EVAL_PREFIX):
            raise UserError(
                f"only evaluation settings (eval.*) can change for a trained run, got {text!r}"
            )
    config = cfglib.override(config, eval_overrides or [])
    setup = config.setup()
    if not has_checkpoint(run_dir):
        raise UserError(f"run {str(run_dir)!r} has no checkpoint yet; train it first")
    like = jax.eval_shape(
        lambda: initial_state(setup.init, setup.estimator, setup.optim, setup.loop)[0]
    )
    ckpt = Checkpointer(run_dir / "checkpoints")
    try:
        step, state, skipped = ckpt.restore_newest(tuple(like))
    finally:
        ckpt.close()
    for note in skipped:
        print(f"metalearn: {note}", file=sys.stderr)
    if state is None:
        raise UserError(f"run {str(run_dir)!r} has no intact checkpoint")
    if skipped:
        print(f"metalearn: using checkpoint {step} of {run_dir}", file=sys.stderr)
    return Run(run_dir, config, TrainState(*state).theta, setup)


def report(run_dir: str | Path, eval_overrides: list[str] | None = None) -> Run:
    """Rerun a trained run's report (its evaluation) without training, optionally with new
    `eval.*` settings; the results replace the run's results.json, curves.png and table.txt."""
    run = load(run_dir, eval_overrides)
    if run.setup.report is None:
        raise UserError(f"run {str(run_dir)!r}'s experiment has no report")
    with FolderLock(run.run_dir, "metalearn report"):
        run.curves = run.setup.report(run.theta, run.run_dir, run.name)
    return run

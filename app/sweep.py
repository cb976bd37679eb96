"""Sweeps: the cartesian product of config settings, each point an ordinary run directory,
collected into one tidy table.

    metalearn sweep linreg --grid model.width=16,32 --grid family.num_tasks=2**0..2**4,none \
        --seeds 2 --out sweeps/width_by_pool

A point is a list of `key=value` assignments on the experiment's config; a grid key is a config
key (`model.width`) or an option inside a spec-valued field (`family.num_tasks`). Points run
one at a time here (this is the local engine); a finished point is skipped when the sweep is
started again, a partly trained one resumes from its checkpoints, and a point that fails is
recorded with its reason while the others go on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import re
import time
from pathlib import Path
from typing import Any

from metalearn.core import config as cfglib
from metalearn.core.errors import NonFiniteError, UserError
from metalearn.core.files import atomic_write, atomic_write_text
from metalearn.core.lock import FolderLock

SWEEP_FILE = "sweep.json"
STATUS_FILE = "status.json"
CACHE_DIR = ".jax-cache"
_RANGE = re.compile(r"^(?:(\d+)\*\*)?(-?\d+)\.\.(?:(\d+)\*\*)?(-?\d+)$")


def parse_values(text: str) -> list[str]:
    """`V1,V2,...`, where an item may be a range: `2**0..2**4` (powers, inclusive) or `1..5`."""
    out = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        m = _RANGE.match(item)
        if m is None:
            out.append(item)
            continue
        base_a, lo, base_b, hi = m.groups()
        if (base_a is None) != (base_b is None) or (base_a and base_a != base_b):
            raise UserError(f"a range is a..b or B**a..B**b with one base B, got {item!r}")
        lo, hi = int(lo), int(hi)
        if hi < lo:
            raise UserError(f"range {item!r} is empty (its end is below its start)")
        if hi - lo > 64:
            raise UserError(f"range {item!r} has {hi - lo + 1} values; at most 65")
        out += [str(int(base_a) ** k if base_a else k) for k in range(lo, hi + 1)]
    if not out:
        raise UserError(f"a grid needs at least one value, got {text!r}")
    return out


def parse_grid(items: list[str]) -> dict[str, list[str]]:
    """`KEY=V1,V2,...` items -> {key: values}, in the order given."""
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"--grid expects KEY=V1,V2,..., got {item!r}")
        if key in grid:
            raise UserError(f"--grid key {key!r} is given twice")
        grid[key] = parse_values(values)
    if not grid:
        raise UserError("a sweep needs at least one --grid KEY=V1,V2,...")
    return grid


@dataclasses.dataclass(frozen=True)
class Plan:
    """What a sweep runs: its grid, the settings every point shares, the seeds per point, and
    the study reading of its table (an experiment's `SWEEP["analysis"]`, if any), how many
    points may train together as one vmapped model, and the learner-by-family table to print
    at the end (`SWEEP["table"]`)."""

    grid: dict[str, list[str]]
    sets: list[str]
    seeds: int
    analysis: dict[str, Any] | None = None
    batch: int = 1  # points per vmapped batch (1: each alone)
    # the learner-by-family table printed at the end (`metalearn table`'s options), if any
    table: dict[str, Any] | None = None


def _text(value: Any) -> str:
    """A TOML value as a config value's text (lists as `a;b`, booleans as true/false)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ";".join(map(_text, value))
    return str(value)


def plan_from(source: dict[str, Any], where: str) -> Plan:
    """A plan from a dict of `grid` (key -> list of values, or a string in --grid syntax),
    `set` (key -> value), `seeds` and `analysis`: a grid file's tables, or an experiment's
    SWEEP."""
    allowed = ("grid", "set", "seeds", "analysis", "batch", "table")
    unknown = sorted(set(source) - set(allowed))
    if unknown:
        raise UserError(f"{where}: unknown entries {unknown}; allowed: {', '.join(allowed)}")
    table = source.get("table")
    if table is not None and (
        not isinstance(table, dict) or set(table) - {"metric", "budget", "subset"}
    ):
        raise UserError(
            f"{where}: table must be a table of metric, budget and subset, got {table!r}"
        )
    grid = {}
    for key, values in dict(source.get("grid", {})).items():
        if isinstance(values, str):
            grid[key] = parse_values(values)
        elif isinstance(values, list | tuple) and values:
            grid[key] = [v for item in values for v in parse_values(_text(item))]
        else:
            raise UserError(f"{where}: grid key {key!r} needs a list of values, got {values!r}")
    sets = [f"{k}={_text(v)}" for k, v in dict(source.get("set", {})).items()]
    seeds = source.get("seeds", 1)
    batch = source.get("batch", 1)
    for name, value in (("seeds", seeds), ("batch", batch)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UserError(f"{where}: {name} must be a positive int, got {value!r}")
    return Plan(grid, sets, seeds, source.get("analysis"), batch, table)


def load_grid_file(path: str | Path) -> Plan:
    """A sweep's plan from a TOML file: `seeds = 3`, a `[grid]` table of key -> values (a list,
    or a string such as "2**0..2**8,none") and an optional `[set]` table of shared settings."""
    import tomllib

    path = Path(path)
    try:
        source = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"grid file {str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"grid file {str(path)!r} is not valid TOML: {e}") from None
    return plan_from(source, f"grid file {str(path)!r}")


def make_plan(
    experiment: str,
    grid_items: list[str],
    *,
    grid_file: str | None = None,
    sets: list[str] | None = None,
    seeds: int | None = None,
    batch: int | None = None,
) -> Plan:
    """The sweep the command line asks for: a grid file's plan, else the experiment's own
    `SWEEP` (a study's default), with each `--grid KEY=...` replacing or adding that key,
    `--set`s after the plan's settings, and `--seeds` and `--batch` replacing its own."""
    from metalearn import runs

    if grid_file is not None:
        base = load_grid_file(grid_file)
    else:
        default = getattr(runs.experiment_module(experiment), "SWEEP", None)
        base = plan_from(default, f"experiment {experiment!r}'s SWEEP") if default else None
        if base is None:
            base = Plan({}, [], 1)
    grid = dict(base.grid)
    grid.update(parse_grid(grid_items) if grid_items else {})
    if not grid:
        raise UserError(
            "a sweep needs at least one --grid KEY=V1,V2,... (or --grid-file, or an experiment "
            "with a default SWEEP)"
        )
    return dataclasses.replace(
        base,
        grid=grid,
        sets=[*base.sets, *(sets or [])],
        seeds=seeds or base.seeds,
        batch=batch or base.batch,
    )


def _field(config: Any, path: list[str]) -> tuple[list[str], list[str]]:
    """Split a dotted key into the path of a config leaf and what lies inside it (a spec
    option), or raise UserError naming the key."""
    node = config
    for i, name in enumerate(path):
        types_ = cfglib.field_types(type(node))
        if name not in types_:
            raise UserError(
                f"unknown grid key {'.'.join(path)!r}; allowed here: {', '.join(sorted(types_))}"
            )
        value = getattr(node, name)
        if not dataclasses.is_dataclass(types_[name]):
            return path[: i + 1], path[i + 1 :]
        node = value
    raise UserError(f"grid key {'.'.join(path)!r} is a group; name one of its keys")


def _get(config: Any, path: list[str]) -> Any:
    for name in path:
        config = getattr(config, name)
    return config


def with_option(spec: str, option: str, value: str) -> str:
    """`spec` (`name:key=value,...`) with `option` set to `value`."""
    from metalearn.data.spec import parse_spec

    if "|" in spec:
        raise UserError(
            f"grid options inside inner-problem specs ('family|model|batch') are not supported "
            f"yet; set the whole spec instead (got {spec!r})"
        )
    name, options = parse_spec(spec)
    options[option] = value
    return name + (":" + ",".join(f"{k}={v}" for k, v in options.items()) if options else "")


@dataclasses.dataclass(frozen=True)
class Point:
    """One configuration of a sweep: its grid settings and seed."""

    settings: tuple[tuple[str, str], ...]
    seed: int

    @property
    def name(self) -> str:
        """Readable, filesystem-safe, unique: the settings and a short hash of them."""
        text = ",".join(f"{k}={v}" for k, v in self.settings) + f",seed={self.seed}"
        digest = hashlib.sha1(text.encode()).hexdigest()[:8]
        readable = re.sub(r"[^A-Za-z0-9_.=,+-]", "_", text)[:120]
        return f"{readable}-{digest}"

    def assignments(self, base: Any) -> list[str]:
        """`key=value` overrides that make this point from the base config."""
        specs: dict[str, str] = {}
        out = []
        for key, value in self.settings:
            leaf, inside = _field(base, key.split("."))
            if not inside:
                out.append(f"{key}={value}")
                continue
            if len(inside) != 1:
                raise UserError(f"grid key {key!r}: a spec option is one name after the field")
            field = ".".join(leaf)
            current = specs.get(field, _get(base, leaf))
            if not isinstance(current, str):
                raise UserError(f"grid key {key!r}: {field!r} is not a spec string")
            specs[field] = with_option(current, inside[0], value)
        out += [f"{field}={spec}" for field, spec in specs.items()]
        return [*out, f"loop.seed={self.seed}"]


def points(grid: dict[str, list[str]], seeds: int) -> list[Point]:
    """The cartesian product of the grid (first key slowest), times `seeds` seeds."""
    if seeds < 1:
        raise UserError(f"--seeds must be a positive int, got {seeds}")
    combos = itertools.product(*([(k, v) for v in vs] for k, vs in grid.items()))
    return [Point(tuple(c), s) for c in combos for s in range(seeds)]


def run_sweep(
    experiment: str,
    grid: dict[str, list[str]],
    *,
    sets: list[str] | None = None,
    seeds: int = 1,
    out: str | Path,
    force: bool = False,
    progress: bool = True,
    jobs: int = 1,
    engine: str = "local",
    address: str | None = None,
    batch: int = 1,
) -> tuple[Path, int, int]:
    """Train and evaluate every point not yet finished; write results.parquet and .csv.

    Returns (table path, points done, points failed). A sweep directory remembers its
    experiment, grid, settings and seeds: running another sweep into it is refused unless
    `force`. `jobs` > 1 runs that many points at once, as processes splitting the cores;
    engine "ray" runs each point as a task on the Ray cluster at `address`
    (`metalearn.sweep_engines`). `batch` > 1 trains up to that many unfinished points that
    differ only in their seed, learning rate or pool size as one vmapped model (`batches`).
    """
    from metalearn import runs
    from metalearn.sweep_engines import ENGINES, BatchJob, PointJob, run_jobs, run_ray

    if jobs < 1:
        raise UserError(f"--jobs must be a positive int, got {jobs}")
    if engine not in ENGINES:
        raise UserError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine != "ray" and address is not None:
        raise UserError("--address is for --engine ray")
    sets = list(sets or [])
    out = Path(out)
    runs.check_folder(out, "sweep directory")
    if batch < 1:
        raise UserError(f"--batch must be a positive int, got {batch}")
    base = runs.make_config(experiment, sets)
    todo = points(grid, seeds)
    overrides = {p: [*sets, *p.assignments(base)] for p in todo}
    # every point's config is checked before the first one trains
    setups = {p: runs.make_config(experiment, overrides[p]).setup() for p in todo}
    out.mkdir(parents=True, exist_ok=True)
    share_compilations(out / CACHE_DIR)
    with FolderLock(out, "metalearn sweep"):
        _check_record(
            out, {"experiment": experiment, "grid": grid, "sets": sets, "seeds": seeds}, force
        )
        bar = _bar(len(todo)) if progress else None
        done = failed = 0
        jobs_of = {
            p: PointJob(experiment, tuple(overrides[p]), str(out / "points" / p.name)) for p in todo
        }
        work = [
            group[0] if len(group) == 1 else BatchJob(tuple(group))
            for group in batches([jobs_of[p] for p in todo], [setups[p] for p in todo], batch)
        ]
        if engine == "ray":
            finished = run_ray(work, address, out / CACHE_DIR)
        else:
            finished = run_jobs(work, jobs, out / CACHE_DIR)
        for _, statuses in finished:
            for status in statuses:
                done += status["status"] == "done"
                failed += status["status"] == "failed"
            if bar is not None:
                bar.set_postfix(failed=failed)
                bar.update(len(statuses))
        if bar is not None:
            bar.close()
        table = write_table(out, todo)
    return table, done, failed


def batches(jobs: list[Any], setups: list[Any], size: int) -> list[list[Any]]:
    """The jobs in groups of at most `size` that can train as one vmapped model: alike by
    `meta.batch.batch_key` and, if partly trained, with their newest checkpoints at one step
    (a batch resumes together). Finished points and those that cannot batch stand alone;
    the groups keep the grid's order of their first members."""
    from metalearn.meta.batch import batch_key

    groups: dict[Any, list[list[Any]]] = {}
    out: list[list[Any]] = []
    for job, setup in zip(jobs, setups, strict=True):
        key = batch_key(setup) if size > 1 else None
        if key is None or _finished(Path(job.run_dir)):
            out.append([job])
            continue
        key = (key, _checkpoint_step(Path(job.run_dir)))
        open_ = groups.setdefault(key, [])
        if not open_ or len(open_[-1]) == size:
            open_.append([job])
            out.append(open_[-1])
        else:
            open_[-1].append(job)
    return out


def _checkpoint_step(run_dir: Path) -> int:
    """The step of a run directory's newest checkpoint (0: none)."""
    ckpt = run_dir / "checkpoints"
    steps = [int(p.name) for p in ckpt.iterdir() if p.name.isdigit()] if ckpt.is_dir() else []
    return max(steps, default=0)


def share_compilations(folder: Path) -> None:
    """Points of one shape compile once: JAX's persistent compilation cache in the sweep
    directory (unless the user already chose a cache), so a point run again, a resumed
    sweep, or a later point with the same shapes loads the compiled program."""
    import jax

    if jax.config.jax_compilation_cache_dir:
        return
    jax.config.update("jax_compilation_cache_dir", str(folder))
    # tiny programs compile fast, but a sweep compiles hundreds of them
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def _check_record(out: Path, record: dict[str, Any], force: bool) -> None:
    path = out / SWEEP_FILE
    if path.exists():
        saved = json.loads(path.read_text())
        if saved != record and not force:
            changed = sorted(k for k in record if saved.get(k) != record[k])
            raise UserError(
                f"sweep directory {str(out)!r} holds another sweep (changed: "
                f"{', '.join(changed)}); use another --out, or --force to add these points to it"
            )
    atomic_write_text(path, json.dumps(record, indent=1) + "\n")


def run_point(config: Any, run_dir: Path) -> dict[str, Any]:
    """Train and report one point unless it has finished; its status record."""
    from metalearn import runs

    if _finished(run_dir):
        return json.loads((run_dir / STATUS_FILE).read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    resume = runs.has_checkpoint(run_dir)
    try:
        # the report's table goes to the point's own log, not the sweep's terminal
        with open(run_dir / "report.log", "a") as log, contextlib.redirect_stdout(log):
            run = runs.train(config, run_dir, resume=resume, force=not resume)
        status = {"status": "done", "reason": "", "train_flops": _train_flops(run)}
    except (UserError, NonFiniteError) as e:
        status = {"status": "failed", "reason": str(e)}
    return _record(run_dir, status, time.perf_counter() - start, resume, 1)


def run_batch(configs: list[Any], run_dirs: list[Path]) -> list[dict[str, Any]]:
    """Train points that differ only in their seed, learning rate or traced scalars as one
    vmapped model (`meta.batch`), then report each; their status records. Finished points
    are skipped; a batch that cannot run as one (its members' checkpoints stand at different
    steps, say) trains its points one at a time instead, each resuming from its own
    checkpoints, so nothing is trained twice."""
    from metalearn import runs

    todo = [i for i, d in enumerate(run_dirs) if not _finished(d)]
    if len(todo) <= 1:
        return [run_point(c, d) for c, d in zip(configs, run_dirs, strict=True)]
    start = time.perf_counter()
    resumed = {i: runs.has_checkpoint(run_dirs[i]) for i in todo}
    try:
        results = runs.train_batch(
            [configs[i] for i in todo], [run_dirs[i] for i in todo], report_log="report.log"
        )
    except UserError:
        return [run_point(c, d) for c, d in zip(configs, run_dirs, strict=True)]
    share = (time.perf_counter() - start) / len(todo)
    for i, result in zip(todo, results, strict=True):
        if isinstance(result, NonFiniteError):
            status = {"status": "failed", "reason": str(result)}
        else:
            status = {"status": "done", "reason": "", "train_flops": _train_flops(result)}
        _record(run_dirs[i], status, share, resumed[i], len(todo))
    return [json.loads((d / STATUS_FILE).read_text()) for d in run_dirs]


def _finished(run_dir: Path) -> bool:
    path = run_dir / STATUS_FILE
    return path.exists() and json.loads(path.read_text())["status"] == "done"


def _train_flops(run: Any) -> float | None:
    count = run.setup.flops_per_step
    return count(run.theta) * run.setup.loop.steps if count is not None else None


def _record(
    run_dir: Path, status: dict[str, Any], wall_s: float, resumed: bool, batch: int
) -> dict[str, Any]:
    """Complete a point's status from its metrics and write it (atomically): wall_s is its
    share of the wall time when `batch` points trained together."""
    from metalearn.meta.logs import plateau_length, read_metrics

    metrics = run_dir / "metrics.jsonl"
    records = read_metrics(metrics) if metrics.exists() else []
    losses = [r for r in records if "loss" in r]
    status.update(
        wall_s=wall_s,
        steps_per_s=losses[-1].get("steps_per_s") if losses else None,
        final_loss=losses[-1]["loss"] if losses else None,
        plateau_steps=plateau_length(losses),
        # on fresh tasks: a biased distribution's training loss also falls by memorizing
        eval_plateau_steps=plateau_length(records, key="eval/loss"),
        resumed=resumed,
        batch=batch,
    )
    atomic_write_text(run_dir / STATUS_FILE, json.dumps(status) + "\n")
    return status


def write_table(out: Path, todo: list[Point]):
    """One row per point x seed x learner x family x subset x budget (or one row per failed
    point), as results.parquet and results.csv under `out`; returns the parquet path."""
    import pandas as pd

    rows = []
    for point in todo:
        run_dir = out / "points" / point.name
        status = json.loads((run_dir / STATUS_FILE).read_text())
        common = {
            **dict(point.settings),
            "seed": point.seed,
            "point": point.name,
            **{k: status.get(k) for k in ("status", "reason", "wall_s", "steps_per_s")},
            "batch": status.get("batch", 1),
            "train_flops": status.get("train_flops"),
            "final_train_loss": status.get("final_loss"),
            "plateau_steps": status.get("plateau_steps"),
            "eval_plateau_steps": status.get("eval_plateau_steps"),
        }
        results = run_dir / "results.json"
        if status["status"] != "done" or not results.exists():
            rows.append(common)
            continue
        trained_on = _training_family(run_dir)
        for r in json.loads(results.read_text()):
            for b, m, s in zip(r["budget"], r["mean"], r["stderr"], strict=True):
                rows.append(
                    {
                        **common,
                        # the point's own trained learner is "model" in every row
                        "learner": "model" if r["learner"] == point.name else r["learner"],
                        **{k: r[k] for k in ("family", "subset", "metric")},
                        "training_family": r["family"] == trained_on,
                        "budget": b,
                        "mean": m,
                        "stderr": s,
                        "num_sequences": r["num_sequences"],
                    }
                )
    frame = pd.DataFrame(rows)
    table = out / "results.parquet"
    atomic_write(table, lambda f: frame.to_parquet(f, index=False), mode="wb")
    atomic_write_text(out / "results.csv", frame.to_csv(index=False))
    return table


def _training_family(run_dir: Path) -> str | None:
    """The canonical spec of the family a point trained on, when its config has one."""
    from metalearn import data

    spec = json.loads((run_dir / "config.json").read_text())["config"].get("family")
    try:
        return data.from_spec(spec).spec if isinstance(spec, str) else None
    except UserError:
        return None


def _bar(total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="sweep", unit="point", dynamic_ncols=True)

"""The `metalearn` command line: parses, calls the library, prints."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from metalearn.core import config as cfglib
from metalearn.core.errors import NonFiniteError, UserError


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        status = args.func(args) or 0
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below
        return status
    except UserError as e:
        print(f"metalearn: error: {e}", file=sys.stderr)
        return 2
    except NonFiniteError as e:
        print(f"metalearn: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # the reader went away (`metalearn families | head -1`): stop quietly, and keep the
        # interpreter from failing again while flushing stdout at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _parser() -> argparse.ArgumentParser:
    from metalearn import __version__, experiments

    p = argparse.ArgumentParser(
        prog="metalearn", description="Meta-learn general-purpose learners."
    )
    p.add_argument("--version", action="version", version=f"metalearn {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser(
        "train",
        help="meta-train an experiment (default: the quickstart)",
        epilog=f"experiments: {', '.join(experiments.names())}; or a module path importable "
        "from here (e.g. my_project.my_experiment, with its folder on PYTHONPATH) or a .py "
        "file. Every config key, its type and value: metalearn train EXPERIMENT --show-config",
    )
    t.add_argument(
        "config",
        nargs="?",
        help="experiment name, module path or .py file (default: quickstart; with --resume: "
        "the run's own)",
    )
    t.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set loop.steps=100 (repeatable)",
    )
    t.add_argument("--out", help="run directory (default: runs/<experiment>)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    t.add_argument("--force", action="store_true", help="delete an existing run directory first")
    t.add_argument(
        "--show-config",
        action="store_true",
        help="print every config key with its type and value (after --set), then exit",
    )
    hosts = t.add_argument_group(
        "multi-host jobs",
        "start the same command once per host, all three options given (or "
        "METALEARN_COORDINATOR, METALEARN_NUM_PROCESSES, METALEARN_PROCESS_ID); process 0 "
        "writes the run directory, which every host must see",
    )
    hosts.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address")
    hosts.add_argument("--num-processes", type=int, metavar="N", help="processes in the job")
    hosts.add_argument("--process-id", type=int, metavar="I", help="this process (0..N-1)")
    t.set_defaults(func=_train)

    r = sub.add_parser(
        "report", help="rerun a trained run's evaluation (its report) without training"
    )
    r.add_argument("run", help="run directory written by `metalearn train`")
    r.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="eval.KEY=VALUE",
        help="change an evaluation setting, e.g. --set eval.sequences=200 (repeatable)",
    )
    r.set_defaults(func=_report)

    s = sub.add_parser(
        "sweep",
        help="train and evaluate every point of a grid of settings, into one table",
        epilog="A point that fails is recorded with its reason and the others go on; run the "
        "same command again to finish an interrupted sweep (finished points are skipped, "
        "partial ones resume).",
    )
    s.add_argument("config", help="experiment name, module path or .py file")
    s.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2,...",
        help="a config key or a spec option (family.num_tasks) and its values; ranges as "
        "2**0..2**4 or 1..5; repeatable (the points are the cartesian product)",
    )
    s.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting shared by every point (repeatable)",
    )
    s.add_argument(
        "--grid-file",
        metavar="FILE.toml",
        help="the grid from a TOML file ([grid] key = [values], [set], seeds); --grid keys "
        "replace its keys",
    )
    s.add_argument(
        "--seeds", type=int, help="seeds per point (loop.seed 0..N-1; default 1, or the plan's)"
    )
    s.add_argument("--out", required=True, help="sweep directory")
    s.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="points trained at once, as processes that split the cores (default 1)",
    )
    s.add_argument(
        "--engine",
        default="local",
        help="local (this machine, default) or ray (each point a task on a Ray cluster)",
    )
    s.add_argument(
        "--address", help="the Ray cluster's address (host:port; default: RAY_ADDRESS or local)"
    )
    s.add_argument(
        "--batch",
        type=int,
        help="train up to N points that differ only in seed, learning rate or pool size as "
        "one vmapped model (default 1, or the plan's)",
    )
    s.add_argument("--force", action="store_true", help="reuse a directory of another sweep")
    s.set_defaults(func=_sweep)

    pl = sub.add_parser(
        "plot",
        help="a sweep's heat map (two grid keys) or curve (one), or a results file's curves",
    )
    pl.add_argument(
        "sweep",
        help="sweep directory written by `metalearn sweep`, or a results .json (of a run or of "
        "`metalearn eval`: its curves go to the .png beside it, --metric and --subset filter)",
    )
    pl.add_argument("--x", help="grid key on the x axis (default: the first)")
    pl.add_argument("--y", help="grid key on the y axis (default: the second, if any)")
    pl.add_argument("--learner", default="model", help="'model' (the trained one) or a baseline")
    pl.add_argument("--metric", help="default: the first in the table")
    pl.add_argument("--subset", help="seen, unseen or all (default: unseen where there is one)")
    pl.add_argument("--budget", type=int, help="default: the last")
    pl.add_argument(
        "--logged",
        metavar="KEY,KEY",
        help="instead: these metrics.jsonl keys (e.g. loss,eval/loss) of every point over "
        "training, one panel per value of --x (DIR/logged.png)",
    )
    pl.add_argument("--smooth", type=int, default=1, help="with --logged: running mean of N logs")
    pl.set_defaults(func=_plot)

    tb = sub.add_parser(
        "table",
        help="a sweep's learners (rows) by families (columns) at one budget: GPICL's Table 1",
    )
    tb.add_argument("sweep", help="sweep directory written by `metalearn sweep`")
    tb.add_argument("--metric", default="accuracy", help="default: accuracy")
    tb.add_argument("--budget", type=int, help="default: each family's last")
    tb.add_argument("--subset", help="seen, unseen or all (default: unseen where there is one)")
    tb.set_defaults(func=_table)

    t = sub.add_parser(
        "transitions",
        help="a sweep's regimes (or ridge/dMMSE closeness) per point and its threshold pool sizes",
        epilog="regimes (Kirsch et al. 2022): instance memorization, task memorization, "
        "transition, learning-to-learn, from seen/unseen gains within 2 standard errors; "
        "closer (Raventos et al. 2023): the model's distance to ridge's and dMMSE's predictions "
        "on fresh tasks. Defaults come from the sweep's experiment where it declares them.",
    )
    t.add_argument("sweep", help="sweep directory written by `metalearn sweep`")
    t.add_argument("--kind", help="regimes (default) or closer")
    t.add_argument("--over", help="the pool-size grid key (default: family.num_tasks)")
    t.add_argument(
        "--by", action="append", help="other grid keys, one threshold each (default: all others)"
    )
    t.add_argument(
        "--margin", type=float, help="learning-to-learn: unseen within 2 SE + this of seen"
    )
    t.set_defaults(func=_transitions)

    f = sub.add_parser(
        "fit",
        help="fit L(C) = a C^-b + c to a sweep's final losses and predict its held-out largest",
    )
    f.add_argument("sweep", help="sweep directory written by `metalearn sweep`")
    f.add_argument("--x", default="flops", help="compute column (flops = train_flops)")
    f.add_argument(
        "--y",
        default="loss",
        help="loss column (loss = final_train_loss) or a metric of the model at the last budget",
    )
    f.add_argument("--holdout", default="largest", help="largest (default) or none")
    f.add_argument("--bootstrap", type=int, default=1000, help="resamples over seeds")
    f.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    f.set_defaults(func=_fit)

    e = sub.add_parser("eval", help="learning curves of learners on task families")
    e.add_argument(
        "--learner",
        action="append",
        required=True,
        help="baseline or optimizer name (see `metalearn learners`) or run directory; repeatable",
    )
    e.add_argument(
        "--family",
        action="append",
        required=True,
        help="SPEC name[:key=value,...], 'train' for the first run's training family, or an "
        "inner problem family|model|batch (budgets in optimizer steps)",
    )
    e.add_argument(
        "--budgets",
        help="comma-separated budgets (default: 0, powers of two, and length-1 examples or "
        "length steps)",
    )
    e.add_argument(
        "--sequences", type=int, default=1000, help="sequences (or runs) per curve (default 1000)"
    )
    e.add_argument(
        "--length",
        type=int,
        help="sequence length (default: a run's length, else 16), or optimizer steps (default: "
        "a run's horizon, else 100)",
    )
    e.add_argument("--seed", type=int, default=0)
    e.add_argument(
        "--out", required=True, help="results JSON path (a PNG plot is written beside it)"
    )
    e.set_defaults(func=_eval)

    sub.add_parser("families", help="list task families and their options").set_defaults(
        func=_families
    )
    sub.add_parser("learners", help="list baseline learners").set_defaults(func=_learners)
    sub.add_parser("experiments", help="list experiments").set_defaults(func=_experiments)

    c = sub.add_parser(
        "chaos", help="variance of exact and estimated meta-gradients versus unroll length"
    )
    c.add_argument("config", help="experiment with a truncated unroll (e.g. lopt_mlp)")
    c.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    c.add_argument("--run", help="run directory whose meta-parameters to use (default: init)")
    c.add_argument("--lengths", default="10,20,50,100", help="episode lengths, comma-separated")
    c.add_argument("--samples", type=int, default=256, help="episodes / workers per length")
    c.add_argument("--truncation", type=int, default=10)
    c.add_argument("--sigma", type=float, default=0.01)
    c.add_argument(
        "--estimators", default=",".join(["tbptt", "truncated_es", "pes", "nres", "full_es"])
    )
    c.add_argument("--seed", type=int, default=0)
    c.add_argument(
        "--chunk",
        type=int,
        default=32,
        help="samples computed at once (default 32): memory is that of this many episodes",
    )
    c.add_argument("--out", required=True, help="folder for chaos.json, chaos.png, chaos.txt")
    c.set_defaults(func=_chaos)

    b = sub.add_parser("bench", help="benchmarks that print numbers")
    b.add_argument(
        "what", choices=["all", "icl", "lopt", "estimators", "scaling", "sweep", "local"]
    )
    b.add_argument("args", nargs=argparse.REMAINDER)
    b.set_defaults(func=_bench)
    return p


def _train(args: argparse.Namespace) -> int:
    from metalearn import runs
    from metalearn.meta import distributed

    name = args.config or runs.DEFAULT_EXPERIMENT
    if args.show_config:
        print(cfglib.describe(runs.make_config(name, args.overrides)))
        return 0
    distributed.initialize(_cluster(args))
    if args.resume and args.out is None and args.config is None:
        raise UserError("--resume needs --out (the run directory) or the experiment's name")
    out = args.out or runs.default_run_dir(name)
    if args.resume and not args.overrides:
        config = None  # the run's saved config
    else:
        config = runs.make_config(name, args.overrides)
    run = runs.train(config, out, resume=args.resume, force=args.force, experiment=args.config)
    if distributed.is_lead():
        print(f"run written to {run.run_dir}")
    return 0


def _cluster(args: argparse.Namespace):
    """The multi-host job the options describe (None when they describe none)."""
    from metalearn.meta.distributed import Cluster

    given = [args.coordinator, args.num_processes, args.process_id]
    if all(v is None for v in given):
        return None
    if any(v is None for v in given):
        raise UserError("a multi-host job needs --coordinator, --num-processes and --process-id")
    return Cluster(args.coordinator, args.num_processes, args.process_id)


def _report(args: argparse.Namespace) -> int:
    from metalearn import runs

    run = runs.report(args.run, args.overrides)
    print(f"report written to {run.run_dir}")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from metalearn import sweep

    plan = sweep.make_plan(
        args.config,
        args.grid,
        grid_file=args.grid_file,
        sets=args.overrides,
        seeds=args.seeds,
        batch=args.batch,
    )
    table, done, failed = sweep.run_sweep(
        args.config,
        plan.grid,
        sets=plan.sets,
        seeds=plan.seeds,
        out=args.out,
        force=args.force,
        jobs=args.jobs,
        engine=args.engine,
        address=args.address,
        batch=plan.batch,
    )
    if plan.analysis and done:
        from metalearn.study import analyze_sweep

        print(analyze_sweep(args.out).text)
    if plan.table and done:
        from metalearn.sweep_table import learner_table

        print(learner_table(args.out, **plan.table))
    total = done + failed
    print(f"{total} points: {done} done, {failed} failed; table {table} (and .csv)")
    return 1 if failed else 0


def _plot(args: argparse.Namespace) -> int:
    from metalearn.sweep_plot import plot_sweep

    source = Path(args.sweep)
    if source.suffix == ".json":
        from metalearn.meta.evaluate import Curves
        from metalearn.meta.results import plot, read_curves

        curves = read_curves(source)
        kept = Curves(
            tuple(
                c
                for c in curves
                if args.metric in (None, c.metric) and args.subset in (None, c.subset)
            )
        )
        if not kept:
            raise UserError(
                f"no curve of metric {args.metric!r} and subset {args.subset!r} in {str(source)!r}"
            )
        out = source.with_suffix(".png")
        plot(kept, out)
        print(f"plot written to {out}")
        return 0

    if args.logged:
        from metalearn.sweep_plot import plot_logged

        keys = [k for k in args.logged.split(",") if k]
        out = plot_logged(args.sweep, keys, panels=args.x, smooth=args.smooth)
        print(f"plot written to {out}")
        return 0
    out = plot_sweep(
        args.sweep,
        x=args.x,
        y=args.y,
        learner=args.learner,
        metric=args.metric,
        subset=args.subset,
        budget=args.budget,
    )
    print(f"plot written to {out}")
    return 0


def _table(args: argparse.Namespace) -> int:
    from metalearn.sweep_table import learner_table

    print(learner_table(args.sweep, metric=args.metric, budget=args.budget, subset=args.subset))
    print(f"written: {Path(args.sweep) / 'table.txt'}")
    return 0


def _transitions(args: argparse.Namespace) -> int:
    from metalearn.study import analyze_sweep

    result = analyze_sweep(
        args.sweep, kind=args.kind, over=args.over, by=args.by, margin=args.margin
    )
    print(result.text)
    print(f"written: transitions.json, transitions.txt and {result.figure.name} in {args.sweep}")
    return 0


def _fit(args: argparse.Namespace) -> int:
    from metalearn.scaling import fit_sweep

    result = fit_sweep(
        args.sweep,
        x=args.x,
        y=args.y,
        holdout=args.holdout,
        bootstrap=args.bootstrap,
        seed=args.seed,
    )
    print(result.summary())
    print(f"written: {Path(args.sweep) / 'fit.json'} and fit.png")
    return 0


def _parse_budgets(text: str | None, below: int, bound: str) -> tuple[int, ...]:
    """The budgets given, or 0, the powers of two below `below` and the last: below - 1."""
    from metalearn.meta.evaluate import check_budgets

    if text is None:
        return tuple(
            sorted({0, below - 1} | {2**i for i in range(below.bit_length()) if 2**i < below})
        )
    try:
        values = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise UserError(f"--budgets must be comma-separated integers, got {text!r}") from None
    return check_budgets(values, below, bound)


def _eval(args: argparse.Namespace) -> int:
    import jax

    from metalearn import learners as registry
    from metalearn.meta.evaluate import Curves, TrainingProblem, evaluate
    from metalearn.meta.results import plot, table, write_json

    if args.sequences < 2:
        raise UserError(f"--sequences must be at least 2, got {args.sequences}")
    if args.length is not None and args.length < 1:
        raise UserError(f"--length must be a positive int, got {args.length}")
    out = Path(args.out)
    _check_output_file(out)  # before the evaluation, not after it
    resolved = [registry.resolve(name) for name in args.learner]
    learners = [learner for learner, _ in resolved]
    setups = [run.setup for _, run in resolved if run is not None]
    families = [_family(spec, setups) for spec in args.family]
    key = jax.random.key(args.seed)
    curves = Curves(())
    for family in families:
        steps = isinstance(family, TrainingProblem)
        unit = "steps" if steps else "examples"
        # the shortest of the runs' own lengths in this unit: every run can be evaluated at it
        lengths = [s.eval_defaults.length(unit) for s in setups]
        length = args.length or min((n for n in lengths if n), default=DEFAULT_LENGTH[unit])
        # a budget of k examples predicts example k+1 (k < length); k steps may run to the last
        if steps:
            budgets = _parse_budgets(args.budgets, length + 1, "the number of steps + 1")
        else:
            budgets = _parse_budgets(args.budgets, length, "the length")
        for learner in learners:
            curves += evaluate(
                learner,
                family,
                budgets,
                args.sequences,
                key,
                length=None if steps else length,
                seed=args.seed,
            )
    write_json(curves, out)
    plot(curves, out.with_suffix(".png"))
    print(table(curves))
    print(f"results written to {out} and {out.with_suffix('.png')}")
    return 0


DEFAULT_LENGTH = {"examples": 16, "steps": 100}


def _check_output_file(out: Path) -> None:
    from metalearn.runs import check_folder

    for path in (out, out.with_suffix(".png")):
        if path.is_dir():
            raise UserError(f"--out {str(path)!r} is a folder; give a file path such as r.json")
    check_folder(out.parent, "folder of --out")


def _family(spec: str, setups: list):
    """A task family or an inner problem (`family|model|batch`); 'train' is the first run's
    training family."""
    from metalearn import data
    from metalearn.lopt.problems import InnerProblem, is_problem_spec

    if spec == "train":
        spec = next((s.eval_defaults.family for s in setups if s.eval_defaults.family), None)
        if spec is None:
            raise UserError("--family train needs a run directory among the learners")
    return InnerProblem.from_spec(spec) if is_problem_spec(spec) else data.from_spec(spec)


def _families(args: argparse.Namespace) -> int:
    from metalearn import data

    for name, cls in sorted(data.FAMILIES.items()):
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        print(f"{name}: {doc}\n    options: {data.describe(cls)}")
    return 0


def _learners(args: argparse.Namespace) -> int:
    from metalearn.learners import LEARNERS

    for name, (_, line) in LEARNERS.items():
        print(f"{name:18s} {line}")
    print("or a run directory written by `metalearn train`")
    return 0


def _experiments(args: argparse.Namespace) -> int:
    from metalearn import runs

    for name in runs.list_experiments():
        doc = (runs.experiment_module(name).__doc__ or "").strip().splitlines()[0]
        print(f"{name:16s} {doc}")
    return 0


def _chaos(args: argparse.Namespace) -> int:
    import jax

    from metalearn import runs
    from metalearn.meta import chaos

    try:
        lengths = [int(t) for t in args.lengths.split(",") if t.strip()]
    except ValueError:
        raise UserError(
            f"--lengths must be comma-separated integers, got {args.lengths!r}"
        ) from None
    if args.run:
        run = runs.load(args.run)
        setup, theta = run.setup, run.theta
    else:
        setup = runs.make_config(args.config, args.overrides).setup()
        theta = setup.init(jax.random.key(args.seed))
    task = setup.truncated_task
    if task is None:
        raise UserError(f"experiment {args.config!r} has no truncated unroll to diagnose")
    names = [n for n in args.estimators.split(",") if n.strip()]
    out = Path(args.out)
    runs.check_folder(out, "--out folder")
    points = chaos.diagnose(
        task,
        theta,
        lengths,
        args.samples,
        jax.random.key(args.seed),
        args.truncation,
        args.sigma,
        names,
        chunk=args.chunk,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )
    print(chaos.write(points, out, title=f"{args.config}"))
    print(f"written to {args.out}/chaos.json, chaos.png, chaos.txt")
    return 0


def _bench(args: argparse.Namespace) -> int:
    import importlib

    return importlib.import_module(f"metalearn.experiments.bench_{args.what}").main(args.args)


if __name__ == "__main__":
    raise SystemExit(main())

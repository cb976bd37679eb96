"""Sweeps: grids, point names, resumption and the collected table (the local engine)."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from metalearn import runs, sweep
from metalearn.cli import main
from metalearn.core.errors import UserError

# a linear-regression model small enough that a point trains in seconds
SMALL = [
    "family=linear_regression:dim=3,noise=0.5",
    "length=6",
    "batch_size=8",
    "model.depth=1",
    "model.width=8",
    "model.heads=2",
    "loop.steps=4",
    "loop.log_every=2",
    "loop.checkpoint_every=2",
    "loop.eval_every=0",
    "loop.progress=false",
    "eval.sequences=8",
    "eval.budgets=0;5",
    "eval.baselines=ridge",
]


def test_values_and_ranges():
    assert sweep.parse_values("2**0..2**3,none") == ["1", "2", "4", "8", "none"]
    assert sweep.parse_values("1..3") == ["1", "2", "3"]
    assert sweep.parse_values("0.5, 1e-3") == ["0.5", "1e-3"]
    for bad in ("", "2**3..2**1", "2**0..3**2"):
        with pytest.raises(UserError):
            sweep.parse_values(bad)
    with pytest.raises(UserError, match="twice"):
        sweep.parse_grid(["a=1", "a=2"])


def test_points_set_config_keys_and_spec_options():
    base = runs.make_config("linreg", SMALL)
    grid = sweep.parse_grid(["model.width=8,16", "family.num_tasks=2**1..2**2,none"])
    pts = sweep.points(grid, seeds=2)
    assert len(pts) == 2 * 3 * 2 and len({p.name for p in pts}) == len(pts)
    config = runs.make_config("linreg", [*SMALL, *pts[3].assignments(base)])
    assert config.model.width == 8 and config.loop.seed == 1
    assert config.family == "linear_regression:dim=3,noise=0.5,num_tasks=4"
    with pytest.raises(UserError, match="unknown grid key"):
        sweep.points(sweep.parse_grid(["model.nope=1"]), 1)[0].assignments(base)


def _argv(out, *extra):
    sets = [x for s in SMALL for x in ("--set", s)]
    # two pool sizes x two seeds: one shape, so one compiled program serves every point
    grid = ["--grid", "family.num_tasks=2,none", "--seeds", "2"]
    return ["sweep", "linreg", *grid, *sets, "--out", str(out), *extra]


def test_a_sweep_runs_every_point_once_and_collects_one_table(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(_argv(out)) == 0
    assert "4 points: 4 done, 0 failed" in capsys.readouterr().out
    frame = pd.read_parquet(out / "results.parquet")
    assert set(frame["family.num_tasks"]) == {"2", "none"} and set(frame["seed"]) == {0, 1}
    assert set(frame["learner"]) > {"ridge"} and set(frame["budget"]) == {0, 5}
    assert (frame["status"] == "done").all() and frame["final_train_loss"].notna().all()
    # pools have seen and unseen subsets; unlimited tasks have all
    assert set(frame[frame["family.num_tasks"] == "2"]["subset"]) == {"seen", "unseen"}
    assert pd.read_csv(out / "results.csv").shape == frame.shape

    # run again: nothing is trained twice
    stamps = {p.name: (p / "status.json").stat().st_mtime_ns for p in (out / "points").iterdir()}
    assert main(_argv(out)) == 0
    assert stamps == {
        p.name: (p / "status.json").stat().st_mtime_ns for p in (out / "points").iterdir()
    }
    # another grid into the same directory is refused
    capsys.readouterr()
    assert main([*_argv(out), "--grid", "batch_size=4,8"]) == 2
    assert "holds another sweep" in capsys.readouterr().err


def test_a_failing_point_is_recorded_and_the_others_go_on(tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["sweep", "linreg", *[x for s in SMALL for x in ("--set", s)], "--out", str(out)]
    # lr 1e38 without clipping or warmup diverges: NaN, recorded as the point's reason
    argv += ["--grid", "optim.lr=1e-3,1e38", "--set", "optim.clip=0", "--set", "optim.warmup=0"]
    argv += ["--set", "loop.steps=12"]
    assert main(argv) == 1
    assert "2 points: 1 done, 1 failed" in capsys.readouterr().out
    frame = pd.read_parquet(out / "results.parquet")
    failed = frame[frame["status"] == "failed"]
    assert len(failed) == 1 and "stopped at step" in failed["reason"].iloc[0]
    assert set(frame[frame["status"] == "done"]["optim.lr"]) == {"1e-3"}
    record = json.loads((out / "sweep.json").read_text())
    assert record["grid"] == {"optim.lr": ["1e-3", "1e38"]}


# two workers, and a batch of two: each covers the one-process path's resume as well
@pytest.mark.parametrize("jobs,batch", [(2, 1), (1, 2)])
def test_kill_9_of_the_sweep_then_the_same_command_finishes_it(tmp_path, jobs, batch):
    """Killed while a point trains, the sweep started again skips the finished points,
    resumes the partial ones, and its table has every point exactly once. With workers, the
    kill of the runner takes its workers with it (no orphan holds a point's lock). With
    batches, the two seeds of a pool train as one vmapped model and resume together."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from metalearn.meta.logs import read_metrics

    out = tmp_path / "sweep"
    # four points (two pools x two seeds; the last --seeds wins), killed while one trains:
    # with two workers, one finishes while others train; with batches of two, the first
    # batch finishes while the second trains
    seeds = ["--seeds", "2", "--jobs", str(jobs), "--batch", str(batch)]
    argv = [*_argv(out), *seeds, "--set", "loop.steps=30", "--set", "loop.log_every=1"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "metalearn.cli", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )

    def second_point_training() -> bool:
        points = sorted((out / "points").glob("*")) if (out / "points").exists() else []
        done = [p for p in points if (p / "status.json").exists()]
        busy = [
            p for p in points if not (p / "status.json").exists() and (p / "metrics.jsonl").exists()
        ]
        # midway through training (not a finished one waiting for its status record)
        return len(done) >= 1 and any(
            5 <= len(read_metrics(p / "metrics.jsonl")) < 30 for p in busy
        )

    end = time.monotonic() + 300
    while not second_point_training():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < end, "the sweep made no progress"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    if jobs > 1:  # the workers die with the runner: every point's lock comes free
        from metalearn.core.lock import FolderLock

        for p in (out / "points").iterdir():
            end = time.monotonic() + 30
            while True:
                try:
                    with FolderLock(p, "test"):
                        break
                except UserError:
                    assert time.monotonic() < end, f"a worker outlived the runner in {p.name}"
                    time.sleep(0.1)
    finished = {
        p.name: (p / "status.json").stat().st_mtime_ns
        for p in (out / "points").iterdir()
        if (p / "status.json").exists()
    }
    total = 4
    assert 1 <= len(finished) < total

    assert main(argv) == 0
    frame = pd.read_parquet(out / "results.parquet")
    assert frame["point"].nunique() == total and (frame["status"] == "done").all()
    # one row per point x learner x family x subset x budget: no point counted twice
    key = ["point", "learner", "family", "subset", "metric", "budget"]
    assert not frame.duplicated(key).any()
    for p in (out / "points").iterdir():
        if p.name in finished:  # not trained again
            assert (p / "status.json").stat().st_mtime_ns == finished[p.name]
        elif jobs == 1:  # went on from its checkpoint (with its batch)
            status = json.loads((p / "status.json").read_text())
            assert status["resumed"] and status["batch"] == batch
        steps = [r["step"] for r in read_metrics(p / "metrics.jsonl") if "loss" in r]
        assert steps == list(range(1, 31))  # every step once, the resumed point included


def _synthetic_sweep(folder, grid: dict[str, list[str]]):
    """A sweep directory with a hand-made table: the model's mse falls with the pool size."""
    import itertools

    rows = []
    for combo in itertools.product(*grid.values()):
        settings = dict(zip(grid, combo, strict=True))
        pool = settings.get("family.num_tasks", "none")
        for seed in (0, 1):
            mse = (1.0 if pool == "none" else 2.0 + 1 / float(pool)) + 0.01 * seed
            subsets = ("all",) if pool == "none" else ("seen", "unseen")
            for subset in subsets:
                rows.append(
                    {
                        **settings,
                        "seed": seed,
                        "point": f"{combo}-{seed}",
                        "plateau_steps": 100 * (len(combo[0]) + seed),
                        "status": "done",
                        "learner": "model",
                        "family": f"f{pool}",
                        "training_family": True,
                        "subset": subset,
                        "metric": "mse",
                        "budget": 5,
                        "mean": mse,
                        "stderr": 0.1,
                    }
                )
    folder.mkdir()
    pd.DataFrame(rows).to_parquet(folder / "results.parquet")
    (folder / "sweep.json").write_text(json.dumps({"grid": grid}))


def test_plots_of_one_and_two_grid_keys(tmp_path):
    from metalearn.sweep_plot import plot_sweep

    one = tmp_path / "one"
    _synthetic_sweep(one, {"family.num_tasks": ["1", "2", "4", "none"]})
    assert plot_sweep(one).name == "plot_mse_unseen.png"
    two = tmp_path / "two"
    _synthetic_sweep(two, {"family.num_tasks": ["2", "8"], "model.width": ["8", "16"]})
    out = plot_sweep(two, x="model.width", y="family.num_tasks", subset="seen")
    assert out.stat().st_size > 0
    with pytest.raises(UserError, match="not a grid key"):
        plot_sweep(two, x="batch_size")
    with pytest.raises(UserError, match="learner 'knn' is not in the table"):
        plot_sweep(two, learner="knn")
    # a point's own column, one value per point, averaged over seeds
    assert plot_sweep(one, metric="plateau_steps").name == "plot_plateau_steps.png"


def test_logged_metrics_of_every_point_over_training(tmp_path):
    from metalearn.sweep_plot import plot_logged

    sweep = tmp_path / "s"
    _synthetic_sweep(sweep, {"batch_size": ["16", "32"], "family.bias": ["0", "0.2"]})
    points = pd.read_parquet(sweep / "results.parquet")["point"].unique()
    for point in points:
        (sweep / "points" / point).mkdir(parents=True)
        lines = [{"step": s, "loss": 2.3 - s / 100} for s in range(1, 6)]
        lines.append({"step": 5, "eval/loss": 2.2})
        (sweep / "points" / point / "metrics.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in lines)
        )
    assert plot_logged(sweep, ["loss", "eval/loss"], smooth=2).stat().st_size > 0
    with pytest.raises(UserError, match=r"\['eval/acc@3'\] were never logged"):
        plot_logged(sweep, ["loss", "eval/acc@3"])
    with pytest.raises(UserError, match="not a grid key"):
        plot_logged(sweep, ["loss"], panels="model.width")


def test_plateau_length_from_the_training_log():
    from metalearn.meta.logs import plateau_length

    def log(losses):
        return [{"step": 10 * (i + 1), "loss": v} for i, v in enumerate(losses)]

    flat_then_down = log([2.30, 2.31, 2.28, 2.25, 2.06, 1.5, 0.9])
    assert plateau_length(flat_then_down) == 50  # first at or below 0.9 x 2.30 = 2.07
    assert plateau_length(flat_then_down, margin=0.5) == 70
    assert plateau_length(log([2.3, 2.2, 2.25])) is None  # still on the plateau
    assert plateau_length([{"step": 5, "eval/acc": 0.5}]) is None
    with pytest.raises(UserError, match="fraction in"):
        plateau_length(flat_then_down, margin=1.5)
    # the fresh-task probe's loss, logged in records of its own between the training records
    mixed = [*flat_then_down, {"step": 20, "eval/loss": 2.4}, {"step": 60, "eval/loss": 2.2}]
    mixed.append({"step": 70, "eval/loss": 2.0})
    assert plateau_length(mixed, key="eval/loss") == 70  # 0.9 x 2.4 = 2.16


def test_the_probe_loss_is_the_cross_entropy_on_fresh_tasks():
    import jax
    import optax

    from metalearn import data
    from metalearn.experiments.icl_study import held_out_scores
    from metalearn.icl.learner import InContextLearner, ModelConfig

    fam = data.from_spec("projected:base=digits,dim=8,bias=0.5")
    learner = InContextLearner.for_family(ModelConfig(depth=1, width=16, heads=2), fam, 6)
    theta = learner.init(jax.random.key(0))
    got = held_out_scores(learner, fam, 6, num=32)(theta)["loss"]
    batch = fam.sample(jax.random.key(12345), 32, 6, "all")  # the probe's own draw: unbiased
    logits = learner.apply(theta, batch.x, batch.y)
    want = optax.softmax_cross_entropy_with_integer_labels(logits, batch.y).mean()
    assert abs(got - float(want)) < 1e-5


def test_workers_give_the_table_one_process_gives(tmp_path):
    alone, workers = tmp_path / "alone", tmp_path / "workers"
    assert main(_argv(alone)) == 0
    assert main([*_argv(workers), "--jobs", "2"]) == 0
    timing = ["wall_s", "steps_per_s"]
    a = pd.read_parquet(alone / "results.parquet").drop(columns=timing)
    b = pd.read_parquet(workers / "results.parquet").drop(columns=timing)
    pd.testing.assert_frame_equal(a, b)
    for p in (workers / "points").iterdir():  # what a point printed is kept beside it
        assert (p / "train.log").exists() and "mse" in (p / "report.log").read_text()


def test_cores_are_split_between_workers():
    from metalearn.sweep_engines import core_groups

    groups = core_groups(2)
    cores = sorted(os.sched_getaffinity(0))
    assert len(groups) == 2 and sorted(c for g in groups for c in g) == cores or len(cores) < 2
    assert [len(g) for g in core_groups(len(cores) + 1)] == [1] * (len(cores) + 1)


def test_grid_files_and_an_experiments_own_sweep(tmp_path):
    toml = tmp_path / "grid.toml"
    toml.write_text(
        'seeds = 2\n[grid]\n"family.num_tasks" = "2**1..2**2,none"\n"model.width" = [8, 16]\n'
        '[set]\n"loop.steps" = 3\n"eval.budgets" = [0, 5]\n"loop.progress" = false\n'
    )
    plan = sweep.make_plan("linreg", ["model.width=32"], grid_file=str(toml), sets=["length=6"])
    assert plan.grid == {"family.num_tasks": ["2", "4", "none"], "model.width": ["32"]}
    assert plan.sets == ["loop.steps=3", "eval.budgets=0;5", "loop.progress=false", "length=6"]
    assert (
        plan.seeds == 2 and sweep.make_plan("linreg", [], grid_file=str(toml), seeds=1).seeds == 1
    )
    # a study declares its grid and its reading; --grid replaces one of its keys
    study = sweep.make_plan("task_diversity", ["loop.steps=5"])
    assert study.grid["family.num_tasks"][0] == "2" and study.grid["family.num_tasks"][-1] == "none"
    assert study.grid["loop.steps"] == ["5"] and study.analysis["kind"] == "closer"
    with pytest.raises(UserError, match="at least one --grid"):
        sweep.make_plan("linreg", [])
    toml.write_text('[grid]\n"model.width" = []\n')
    with pytest.raises(UserError, match="needs a list of values"):
        sweep.load_grid_file(toml)
    toml.write_text("grid = [\n")
    with pytest.raises(UserError, match="not valid TOML"):
        sweep.load_grid_file(toml)
    toml.write_text("seed = 3\n")
    with pytest.raises(UserError, match=r"unknown entries \['seed'\]"):
        sweep.load_grid_file(toml)


def test_the_regression_study_reads_ridge_and_dmmse_distances(tmp_path, capsys):
    out = tmp_path / "diversity"
    sets = [x for s in SMALL if not s.startswith("eval.baselines") for x in ("--set", s)]
    grid = ["--grid", "family.num_tasks=2,none", "--grid", "loop.steps=4"]
    assert main(["sweep", "task_diversity", *grid, *sets, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "threshold (loop.steps=4):" in printed
    frame = pd.read_parquet(out / "results.parquet")
    model = frame[frame["learner"] == "model"]
    pool = model[model["family.num_tasks"] == "2"]
    assert set(pool["metric"]) == {"mse", "distance_to_ridge", "distance_to_dmmse"}
    fresh = model[model["family.num_tasks"] == "none"]
    assert set(fresh["metric"]) == {"mse", "distance_to_ridge"}  # no pool: no dMMSE
    assert set(frame[frame["learner"] == "dmmse"]["family.num_tasks"]) == {"2"}
    assert (frame["train_flops"].dropna() > 0).all() and frame["train_flops"].notna().all()
    saved = json.loads((out / "transitions.json").read_text())
    assert saved["reading"]["kind"] == "closer" and list(saved["thresholds"]) == ["loop.steps=4"]
    assert [r["family.num_tasks"] for r in saved["labels"]] == ["2"]
    assert (out / "phase_closer.png").stat().st_size > 0
    # the same directory read another way: regimes need accuracy, which regression has not
    assert main(["transitions", str(out), "--kind", "regimes"]) == 2
    assert "metric 'accuracy'" in capsys.readouterr().err


def test_the_classification_study_labels_regimes(tmp_path, capsys):
    out = tmp_path / "gpicl"
    sets = [x for s in TINY_CLS for x in ("--set", s)]
    grid = ["--grid", "family.num_tasks=1,none", "--grid", "model.width=16"]
    assert main(["sweep", "gpicl_transition", *grid, *sets, "--out", str(out)]) == 0
    assert "threshold (model.width=16):" in capsys.readouterr().out
    saved = json.loads((out / "transitions.json").read_text())
    labels = {r["family.num_tasks"]: r["regime"] for r in saved["labels"]}
    assert set(labels) == {"1", "none"}
    assert set(labels.values()) <= {
        "instance memorization",
        "task memorization",
        "transition",
        "learning-to-learn",
    }
    assert (out / "phase_regimes.png").stat().st_size > 0
    assert main(["transitions", str(out), "--over", "model.width"]) == 0  # another reading
    assert "threshold (family.num_tasks=1)" in capsys.readouterr().out


TINY_CLS = [
    "family=projected:base=digits,dim=8",
    "length=8",
    "batch_size=16",
    "model.depth=1",
    "model.heads=2",
    "loop.steps=4",
    "loop.log_every=2",
    "loop.checkpoint_every=2",
    "loop.progress=false",
    "eval.sequences=16",
    "eval.budgets=0;3;7",
]


def test_plot_axes_keep_the_grids_order_for_names_and_sort_numbers():
    import pandas as pd

    from metalearn.sweep_plot import _axis

    assert _axis(pd.Series(["fw1", "lstm", "fw1"]), ["lstm", "fw8", "fw1"]) == ["lstm", "fw1"]
    assert _axis(pd.Series(["64", "none", "8"]), ["none", "64", "8"]) == ["8", "64", "none"]

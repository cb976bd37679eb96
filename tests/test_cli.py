"""The command line, in-process (fast) except one test of the installed console script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from metalearn.cli import main


def _err(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("metalearn: error:") and "Traceback" not in err
    return err


def test_train_writes_a_run(tiny_run):
    for name in ("config.json", "metrics.jsonl", "results.json", "curves.png", "table.txt"):
        assert (tiny_run / name).is_file(), name
    assert (tiny_run / "checkpoints").is_dir()
    config = json.loads((tiny_run / "config.json").read_text())
    assert config["experiment"] == "metalearn.experiments.quickstart"
    assert config["config"]["family"] == "projected:base=digits,dim=8"
    records = json.loads((tiny_run / "results.json").read_text())
    assert {r["learner"] for r in records} == {"tiny", "knn"}
    assert {r["subset"] for r in records} == {"all"}


def test_existing_run_needs_resume_or_force(tiny_run, tiny_args, capsys):
    err = _err(capsys, ["train", *tiny_args, "--out", str(tiny_run)])
    assert str(tiny_run) in err and "--resume" in err and "--force" in err


def test_resume_refuses_a_changed_config(tiny_run, tiny_args, capsys):
    err = _err(
        capsys, ["train", *tiny_args, "--set", "loop.steps=7", "--out", str(tiny_run), "--resume"]
    )
    assert "loop.steps" in err


def test_resume_of_a_finished_run_and_force(tiny_run, tiny_args, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_run, copy)
    assert main(["train", "--out", str(copy), "--resume"]) == 0
    assert main(["train", *tiny_args, "--out", str(copy), "--force"]) == 0


@pytest.mark.parametrize(
    "overrides, words",
    [
        (["--set", "nope=1"], ["unknown config key 'nope'", "family"]),
        (["--set", "model.depth=two"], ["model.depth", "'two'", "integer"]),
        (["--set", "model=3"], ["group", "model.depth"]),
        (["--set", "family=nonsense"], ["unknown family", "'nonsense'"]),
        (["--set", "model.width=30", "--set", "model.heads=4"], ["model.width", "30", "heads"]),
        (["--set", "loop.steps=0"], ["loop.steps", "0"]),
    ],
)
def test_bad_train_input(capsys, tmp_path, overrides, words):
    err = _err(capsys, ["train", *overrides, "--out", str(tmp_path / "x")])
    for w in words:
        assert w in err
    assert not (tmp_path / "x").exists()  # nothing half-written


def test_unknown_experiment(capsys, tmp_path):
    err = _err(capsys, ["train", "no_such_experiment", "--out", str(tmp_path / "x")])
    assert "'no_such_experiment'" in err and "quickstart" in err


def test_nan_stops_the_run_with_step_and_quantity(capsys, tiny_args, tmp_path):
    argv = [
        "train",
        *tiny_args,
        "--set",
        "optim.lr=1e38",
        "--set",
        "optim.clip=0",
        "--set",
        "optim.warmup=0",
        "--set",
        "loop.steps=30",
        "--out",
        str(tmp_path / "nan"),
    ]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "stopped at step" in err and ("nan" in err or "inf" in err)
    assert "Traceback" not in err


def test_eval_a_run_beside_baselines(tiny_run, tmp_path, capsys):
    out = tmp_path / "res.json"
    argv = [
        "eval",
        "--learner",
        str(tiny_run),
        "--learner",
        "knn",
        "--family",
        "train",
        "--family",
        "random:dim=8,num_classes=10",
        "--budgets",
        "0,2,7",
        "--sequences",
        "8",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    records = json.loads(out.read_text())
    assert len(records) == 10 and out.with_suffix(".png").is_file()
    metrics = {
        name: {r["metric"] for r in records if r["learner"] == name} for name in ("tiny", "knn")
    }
    # calibration where there are probabilities (the model), accuracy alone where not (1-NN)
    assert metrics == {"tiny": {"accuracy", "nll", "brier", "ece"}, "knn": {"accuracy"}}
    assert all(r["budget"] == [0, 2, 7] for r in records)
    assert "knn" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--family", "random:dim=5"], ["inputs of size 8", "input size 5"]),
        (["--family", "train", "--length", "20"], ["at most 8", "20"]),
        (["--family", "train", "--budgets", "0,8"], ["budget 8", "below the length"]),
        (["--family", "linear_regression:dim=8"], ["classification"]),
        (["--family", "train", "--learner", "ridge"], ["ridge", "regression"]),
        (["--family", "train", "--learner", "magic"], ["'magic'", "knn"]),
        (["--family", "projected:base=missing.npz,dim=8"], ["missing.npz", "does not exist"]),
    ],
)
def test_bad_eval_input(tiny_run, tmp_path, capsys, extra, words):
    err = _err(
        capsys,
        [
            "eval",
            "--learner",
            str(tiny_run),
            *extra,
            "--sequences",
            "4",
            "--out",
            str(tmp_path / "r.json"),
        ],
    )
    for w in words:
        assert w in err
    assert not (tmp_path / "r.json").exists()


def test_listings(capsys):
    assert main(["families"]) == 0 and "projected" in capsys.readouterr().out
    assert main(["learners"]) == 0 and "logistic_adam" in capsys.readouterr().out
    assert main(["experiments"]) == 0 and "quickstart" in capsys.readouterr().out


def test_listings_from_a_project_with_its_own_experiments_package(tmp_path):
    """Run where `experiments` is the user's own package, not ours."""
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "__init__.py").write_text("")
    cmd = [sys.executable, "-m", "metalearn.cli", "experiments"]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "quickstart" in done.stdout and "lopt_mlp" in done.stdout


def test_installed_console_script(tmp_path):
    beside = Path(sys.executable).parent / "metalearn"  # the venv running pytest, if not on PATH
    exe = shutil.which("metalearn") or (str(beside) if beside.exists() else None)
    if exe is None:
        pytest.skip("console script not installed")
    out = tmp_path / "r.json"
    done = subprocess.run(
        [
            exe,
            "eval",
            "--learner",
            "ridge",
            "--family",
            "linear_regression:dim=2",
            "--budgets",
            "0,1,3",
            "--sequences",
            "8",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text())[0]["learner"] == "ridge"
    bad = subprocess.run(
        [
            exe,
            "eval",
            "--learner",
            "ridge",
            "--family",
            "linear_regression:dim=-1",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and "dim" in bad.stderr and "Traceback" not in bad.stderr


def test_one_evaluation_reports_accuracy_and_likelihood(tiny_run):
    """A predictor returns log-probabilities beside its labels, so one pass over the sequences
    gives several metrics; a learner without probabilities is told so."""
    import jax
    import numpy as np

    import metalearn
    from metalearn import data
    from metalearn.core.errors import UserError
    from metalearn.icl.baselines import baseline

    learner = metalearn.load(tiny_run).learner
    fam = data.from_spec("projected:base=digits,dim=8")
    key = jax.random.key(5)
    both = metalearn.evaluate(learner, fam, [0, 3, 7], 16, key, metrics=("accuracy", "nll"))
    alone = metalearn.evaluate(learner, fam, [0, 3, 7], 16, key).get(metric="accuracy")
    assert both.get(metric="accuracy").mean == alone.mean  # the same sequences
    nll = np.asarray(both.get(metric="nll").mean)
    assert np.isfinite(nll).all() and (nll > 0).all()
    with pytest.raises(UserError, match="no probabilities"):
        metalearn.evaluate(baseline("knn"), fam, [0, 3], 4, key, metrics=("nll",))
    with pytest.raises(UserError, match="does not apply to classification"):
        metalearn.evaluate(baseline("knn"), fam, [0, 3], 4, key, metrics=("mse",))


def test_predictions_of_two_learners_on_the_same_sequences(tiny_run):
    """`collect` sees the sequences `evaluate` scores; a learner agrees with itself, differs
    from another, and its calibration error lies in [0, 1]."""
    import jax
    import numpy as np

    import metalearn
    from metalearn import data
    from metalearn.core.errors import UserError
    from metalearn.icl.baselines import baseline
    from metalearn.meta.compare import calibration_error, collect, disagreement, kl_divergence

    learner = metalearn.load(tiny_run).learner
    fam = data.from_spec("projected:base=digits,dim=8")
    key, budgets = jax.random.key(6), [0, 3, 7]
    mine = collect(learner, fam, budgets, 24, key)
    curve = metalearn.evaluate(learner, fam, budgets, 24, key).get(metric="accuracy")
    np.testing.assert_allclose((mine.value == mine.target).mean(0), curve.mean)
    knn = collect(baseline("knn"), fam, budgets, 24, key)
    assert disagreement(mine, mine).sum() == 0 and np.abs(kl_divergence(mine, mine)).max() < 1e-9
    assert disagreement(mine, knn).mean() > 0
    ece = calibration_error(mine)
    assert ece.shape == (3,) and ((ece >= 0) & (ece <= 1)).all()
    other = collect(baseline("knn"), fam, budgets, 24, jax.random.key(7))
    with pytest.raises(UserError, match="not collected on the same sequences"):
        disagreement(mine, other)


def test_a_results_file_reads_back_and_plots(tiny_run, tmp_path, capsys):
    from metalearn.meta.results import read_curves, write_json

    curves = read_curves(tiny_run / "results.json")
    assert len(curves) > 0 and all(c.per_sequence is None for c in curves)
    write_json(curves, tmp_path / "again.json")
    assert (tmp_path / "again.json").read_text() == (tiny_run / "results.json").read_text()
    assert main(["plot", str(tmp_path / "again.json"), "--metric", "accuracy"]) == 0
    assert (tmp_path / "again.png").stat().st_size > 0
    assert main(["plot", str(tmp_path / "again.json"), "--metric", "mse"]) == 2
    assert "no curve of metric 'mse'" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text('[{"schema": 7}]')
    assert main(["plot", str(tmp_path / "bad.json")]) == 2
    assert "is not a results file" in capsys.readouterr().err


def test_figure_titles_keep_the_options_that_differ():
    from metalearn.meta.results import short_names

    specs = [
        "lr:dim=8,noise=0,skew=0",
        "lr:dim=8,noise=0,skew=2",
        "lr:dim=8,noise=1,skew=0",
        "tree:dim=8,noise=0,depth=3",
    ]
    assert list(short_names(specs).values()) == ["lr", "lr:skew=2", "lr:noise=1", "tree"]
    assert short_names(["a:x=1", "a:x=2"]) == {"a:x=1": "a", "a:x=2": "a:x=2"}
    assert short_names(["a:x=1", "a"]) == {"a:x=1": "a:x=1", "a": "a"}  # would read alike

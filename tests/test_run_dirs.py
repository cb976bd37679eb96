"""Run directories on a user's second day: damaged files, evaluation settings, failed starts,
unwritable outputs, experiments of their own (issue 15, items 3-10)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import metalearn
from metalearn.cli import main
from metalearn.core.errors import UserError
from metalearn.lopt.models import parse_model
from metalearn.lopt.problems import InnerProblem
from metalearn.meta.logs import read_metrics
from tests.helpers import cli_error, thetas_equal


def _damage_newest(run: Path) -> int:
    """Truncate the largest file of the newest checkpoint to half; return its step."""
    steps = sorted(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())
    files = [p for p in (run / "checkpoints" / str(steps[-1])).rglob("*") if p.is_file()]
    biggest = max(files, key=lambda p: p.stat().st_size)
    biggest.write_bytes(biggest.read_bytes()[: biggest.stat().st_size // 2])
    return steps[-1]


def test_a_damaged_newest_checkpoint_falls_back_and_resumes_exactly(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    step = _damage_newest(run)
    assert step == 6  # checkpoints after steps 3 and 6

    # eval reads the previous checkpoint, saying which it skipped
    out = tmp_path / "r.json"
    argv = ["eval", "--learner", str(run), "--family", "train", "--sequences", "4"]
    assert main([*argv, "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "checkpoint 6 is damaged" in err and "using checkpoint 3" in err
    assert "Traceback" not in err and len(err.splitlines()) == 2

    # resume sets the damaged one aside, redoes steps 4-6, and ends where the run ended
    assert main(["train", "--out", str(run), "--resume"]) == 0
    err = capsys.readouterr().err
    assert "checkpoint 6 is damaged" in err and "resuming from checkpoint 3" in err
    assert (run / "checkpoints" / "6.damaged").is_dir()
    assert thetas_equal(metalearn.load(run).theta, metalearn.load(tiny_run).theta)
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl") if "loss" in r] == [2, 4, 6]


def test_no_intact_checkpoint_is_one_line(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    _damage_newest(run)
    shutil.rmtree(run / "checkpoints" / "3")
    err = cli_error(capsys, ["train", "--out", str(run), "--resume"])
    assert "no intact checkpoint" in err and "--force" in err


def test_a_torn_last_metrics_line_is_repaired_on_resume(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    shutil.rmtree(run / "checkpoints" / "6")  # as if killed while step 6 was being written
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "loss": 2.3')  # the write cut short
    assert len(read_metrics(run / "metrics.jsonl")) == 3  # readers skip the torn line
    assert main(["train", "--out", str(run), "--resume"]) == 0
    assert "torn line" in capsys.readouterr().err
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [2, 4, 6]
    assert thetas_equal(metalearn.load(run).theta, metalearn.load(tiny_run).theta)


@pytest.mark.parametrize(
    "setting, words",
    [
        ("eval.sequences=0", ["eval.sequences", "0"]),
        ("eval.budgets=0;9", ["eval.budgets", "budget 9"]),
        ("eval.baselines=magic", ["'magic'"]),
        ("eval.families=random:dim=5", ["input size 5"]),
        ("eval.reference=ridge", ["eval.reference", "'ridge'"]),
    ],
)
def test_evaluation_settings_fail_before_training(tiny_args, tmp_path, capsys, setting, words):
    out = tmp_path / "run"
    err = cli_error(capsys, ["train", *tiny_args, "--set", setting, "--out", str(out)])
    for w in words:
        assert w in err
    assert not out.exists()  # nothing trained, nothing written


def test_report_reruns_the_evaluation_with_new_settings(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = (run / "checkpoints").stat().st_mtime_ns
    assert main(["report", str(run), "--set", "eval.sequences=6", "--set", "eval.budgets=0;5"]) == 0
    records = json.loads((run / "results.json").read_text())
    assert {r["num_sequences"] for r in records} == {6} and {
        tuple(r["budget"]) for r in records
    } == {(0, 5)}
    assert (run / "checkpoints").stat().st_mtime_ns == before  # nothing trained
    capsys.readouterr()
    err = cli_error(capsys, ["report", str(run), "--set", "loop.steps=9"])
    assert "eval.*" in err and "loop.steps" in err


def test_resume_may_change_only_evaluation_settings(tiny_run, tiny_args, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    argv = ["train", *tiny_args, "--set", "eval.sequences=5", "--out", str(run), "--resume"]
    assert main(argv) == 0
    assert json.loads((run / "config.json").read_text())["config"]["eval"]["sequences"] == 5
    assert {r["num_sequences"] for r in json.loads((run / "results.json").read_text())} == {5}


def test_a_failed_start_does_not_block_the_retry(tiny_args, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", *tiny_args, "--out", str(out)]
    try:
        import tensorboardX  # noqa: F401

        pytest.skip("tensorboardX is installed: loop.tensorboard=true would not fail")
    except ImportError:
        pass
    err = cli_error(capsys, [*argv, "--set", "loop.tensorboard=true"])
    assert "tensorboardX" in err
    assert main(argv) == 0  # the same command, fixed: no "already exists"
    assert metalearn.load(out).theta is not None


def test_a_folder_of_other_files_is_never_cleared(tiny_args, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    err = cli_error(capsys, ["train", *tiny_args, "--out", str(tmp_path)])
    assert "notes.txt" in err and (tmp_path / "notes.txt").read_text() == "mine"


def test_unwritable_outputs_are_refused_up_front(tiny_run, tiny_args, tmp_path, capsys):
    a_file = tmp_path / "README.md"
    a_file.write_text("x")
    err = cli_error(capsys, ["train", *tiny_args, "--out", str(a_file / "run")])
    assert "README.md" in err and "is a file" in err
    err = cli_error(capsys, ["train", *tiny_args, "--out", str(a_file)])
    assert "is a file" in err
    family = ["--family", "random:dim=8", "--learner", "knn", "--sequences", "4"]
    err = cli_error(capsys, ["eval", *family, "--out", str(a_file / "r.json")])
    assert "is a file" in err
    (tmp_path / "dir.json").mkdir()
    err = cli_error(capsys, ["eval", *family, "--out", str(tmp_path / "dir.json")])
    assert "is a folder" in err


@pytest.mark.parametrize(
    "text", ["64x", "x64", "64xx32", "conv:8x", "conv:", "transformer:32", "6 4", "+64"]
)
def test_inner_model_typos_are_refused(text):
    with pytest.raises(UserError, match="an inner model is"):
        parse_model(text)


@pytest.mark.parametrize("spec", ["digits|64|x", "digits|64| 128", "digits|64|+128"])
def test_inner_problem_batch_typos_are_refused(spec):
    with pytest.raises(UserError, match="family\\|model\\|batch"):
        InnerProblem.from_spec(spec)


USER_EXPERIMENT = '''
"""A user's experiment: the quickstart, tiny."""
import dataclasses

from metalearn.experiments import quickstart
from metalearn.meta.loop import LoopConfig


@dataclasses.dataclass(frozen=True)
class Config(quickstart.Config):
    family: str = "projected:base=digits,dim=8"
    length: int = 8
    batch_size: int = 16
    loop: LoopConfig = LoopConfig(steps=3, log_every=1, checkpoint_every=3, progress=False)
'''


def test_a_user_experiment_by_file_and_by_module_path(tmp_path, tiny_args, monkeypatch, capsys):
    pkg = tmp_path / "my_project"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "tiny.py").write_text(USER_EXPERIMENT)
    small = [a for a in tiny_args if a.startswith("model.") or a.startswith("eval.")]
    small = [x for a in small for x in ("--set", a)]

    by_file = tmp_path / "by_file"
    assert main(["train", str(pkg / "tiny.py"), *small, "--out", str(by_file)]) == 0
    record = json.loads((by_file / "config.json").read_text())
    assert record["experiment"] == str((pkg / "tiny.py").resolve())
    assert metalearn.load(by_file).config.loop.steps == 3

    monkeypatch.syspath_prepend(str(tmp_path))  # what PYTHONPATH=<tmp_path> does
    by_module = tmp_path / "by_module"
    assert main(["train", "my_project.tiny", *small, "--out", str(by_module)]) == 0
    assert json.loads((by_module / "config.json").read_text())["experiment"] == "my_project.tiny"

    # resuming under another experiment's name is refused
    err = cli_error(capsys, ["train", "lopt_mlp", "--out", str(by_module), "--resume"])
    assert "my_project.tiny" in err and "lopt_mlp" in err


def test_a_run_whose_experiment_cannot_be_imported(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    record = json.loads((run / "config.json").read_text())
    record["experiment"] = "not_installed_pkg.exp"
    (run / "config.json").write_text(json.dumps(record))
    err = cli_error(
        capsys, ["eval", "--learner", str(run), "--family", "random:dim=8", "--out", "x"]
    )
    assert "not_installed_pkg" in err and "PYTHONPATH" in err


def test_result_files_follow_the_umask(tiny_run):
    old = os.umask(0o022)
    os.umask(old)
    if old & 0o044:
        pytest.skip(f"this umask ({old:o}) hides files from the group anyway")
    for name in ("results.json", "table.txt", "config.json", "curves.png"):
        mode = stat.S_IMODE((tiny_run / name).stat().st_mode)
        assert mode == 0o666 & ~old, (name, oct(mode))


def test_small_cli_items(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("metalearn ")
    assert main(["train", "linreg", "--set", "loop.steps=7", "--show-config"]) == 0
    shown = capsys.readouterr().out
    assert "loop.steps" in shown and " 7" in shown and "eval.sequences" in shown
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    helptext = capsys.readouterr().out
    assert "quickstart" in helptext and "lopt_mlp" in helptext and "--show-config" in helptext


def test_eval_length_errors_name_the_length(capsys, tmp_path):
    err = cli_error(
        capsys,
        ["eval", "--learner", "knn", "--family", "random:dim=4", "--length", "-4", "--out", "r"],
    )
    assert "--length" in err and "-4" in err


def test_a_closed_pipe_is_quiet():
    """`metalearn families | head -1`: no BrokenPipeError traceback."""
    cmd = [sys.executable, "-m", "metalearn.cli", "families"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader goes away before the listing is written
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipe" not in err

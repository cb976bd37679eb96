"""The benchmark suite's plumbing: machine description, table, JSON Lines record, and an
estimator's throughput on a tiny problem (speed itself is never asserted)."""

from __future__ import annotations

import json
import math

import pytest

from metalearn.experiments import bench_all


def test_runs_are_appended_whole_to_a_json_lines_file(tmp_path):
    path = tmp_path / "bench.jsonl"
    bench_all.append_record(path, {"run": 1})
    path.write_text(path.read_text().rstrip("\n"))  # a file someone edited by hand
    bench_all.append_record(path, {"run": 2})
    assert [json.loads(line)["run"] for line in path.read_text().splitlines()] == [1, 2]
    assert not list(tmp_path.glob("*.tmp*"))  # written atomically: no leftovers


def test_the_table_names_the_machine_every_figure_and_its_goal(capsys):
    about = bench_all.machine()
    assert about["cores"] >= 1 and about["devices"] >= 1 and about["jax"]
    figures = [
        {"suite": "icl", "figure": "ICL step (b) of the matmul rate", "value": 0.31}
        | {"unit": "fraction", "goal": ">= 0.5"},
        {"suite": "lopt", "figure": "same step, velo", "value": 3.25, "unit": "x Adam"},
    ]
    bench_all.print_table(figures, about)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"machine: {about['cpu']}, {about['cores']} cores")
    assert "0.31 fraction  (goal >= 0.5)" in out[1] and "3.2 x Adam" in out[2]


def test_bench_all_refuses_an_unknown_suite_with_one_line(capsys):
    with pytest.raises(SystemExit):
        bench_all.main(["--only", "icl,gpu"])
    assert "--only takes suites among icl, lopt" in capsys.readouterr().err


@pytest.mark.parametrize("estimator", ["tbptt", "pes"])
def test_estimator_throughput_on_a_tiny_problem(estimator):
    from metalearn.experiments.bench_estimators import inner_steps_per_s
    from metalearn.lopt import MLP, InnerProblem, MLPLOpt

    tiny = InnerProblem("projected:base=digits,dim=8", MLP(()), 16)
    rate = inner_steps_per_s(MLPLOpt(hidden=4), estimator, 2, workers=2, truncation=2, problem=tiny)
    assert math.isfinite(rate) and rate > 0

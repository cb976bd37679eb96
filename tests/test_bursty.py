"""The bursty family's class statistics: burstiness, the Zipf law over classes, and what the
in-context (fewshot) and in-weights (absent) evaluations promise."""

import jax
import numpy as np

from metalearn import data

L = 9  # 8 context examples and the query


def assignments(n: int, **options):
    fam = data.make("bursty", dim=4, **options)
    keys = jax.random.split(jax.random.key(0), n)
    cls, lab = jax.vmap(lambda k: fam.assignment(k, L))(keys)
    return fam, np.asarray(cls), np.asarray(lab)


def test_burstiness_is_the_fraction_of_bursty_sequences():
    _, cls, _ = assignments(4000, classes=1000, burstiness=0.7, burst=3)
    in_context = (cls[:, :-1] == cls[:, -1:]).sum(1)
    # bursty: exactly `burst` copies of the query's class (the other 5 share a distractor);
    # otherwise classes are iid over 1000, so the query's class almost never recurs
    bursty = (in_context == 3) & (np.array([len(set(r[:-1])) for r in cls]) == 2)
    se = np.sqrt(0.7 * 0.3 / len(cls))
    assert abs(bursty.mean() - 0.7) < 3 * se
    assert (in_context[~bursty] <= 1).mean() > 0.99


def test_query_classes_follow_the_zipf_law():
    _, cls, _ = assignments(20000, classes=20, zipf=1.2)
    counts = np.bincount(cls[:, -1], minlength=20)
    slope = np.polyfit(np.log(np.arange(1, 21)), np.log(counts), 1)[0]
    assert abs(slope + 1.2) < 0.1
    _, flat, _ = assignments(20000, classes=20, zipf=0.0)
    slope = np.polyfit(np.log(np.arange(1, 21)), np.log(np.bincount(flat[:, -1])), 1)[0]
    assert abs(slope) < 0.1


def test_fixed_labels_fresh_labels_and_absent_queries():
    fam, cls, lab = assignments(500, classes=50, heldout=10)
    # training sequences: each class always carries its one label
    for c in np.unique(cls):
        assert len(set(lab[cls == c])) == 1
    _, cls, lab = assignments(500, classes=50, heldout=10, mode="fewshot", burst=4)
    assert (cls >= 50).all() and (cls < 60).all()  # held-out classes only
    assert ((cls[:, :-1] == cls[:, -1:]).sum(1) == 4).all()  # the query's class, 4 times
    per_seq = [dict(zip(c, lb, strict=True)) for c, lb in zip(cls, lab, strict=True)]
    assert all(len(set(m.values())) == 2 for m in per_seq)  # two distinct labels
    labels_of_one_class = {m[c] for m, c in zip(per_seq, cls[:, -1], strict=True) if c == 50}
    assert len(labels_of_one_class) > 2  # fresh per sequence, not fixed
    _, cls, _ = assignments(500, classes=50, mode="absent")
    assert not (cls[:, :-1] == cls[:, -1:]).any()


SMALL = ["family=bursty:dim=8,classes=20,heldout=4,num_classes=4", "length=6", "batch_size=8"]


def test_the_bursty_study_logs_both_evaluators_during_training(tmp_path):
    """Every `eval_every` steps the metrics hold the in-context (fewshot) and in-weights
    (absent) accuracies beside the training family's; the report draws them over training."""
    from metalearn import runs

    overrides = [
        *SMALL,
        "model.depth=1",
        "model.width=16",
        "loop.steps=4",
        "loop.eval_every=2",
        "loop.progress=false",
        "eval.sequences=16",
        "eval.budgets=0;5",
    ]
    config = runs.make_config("bursty_icl", overrides)
    run = runs.train(config, tmp_path / "run", force=True)
    from metalearn.meta.logs import read_metrics

    evals = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "eval/acc@5" in r]
    assert [r["step"] for r in evals] == [2, 4]
    assert all(0 <= r[f"eval/{m}/acc@5"] <= 1 for r in evals for m in ("fewshot", "absent"))
    assert (tmp_path / "run" / "training.png").exists()
    modes = {c.family.split("mode=")[1].split(",")[0] for c in run.curves}
    assert modes == {"train", "fewshot", "absent"}


def test_periodic_families_are_named_and_checked():
    import pytest

    from metalearn import runs
    from metalearn.core.errors import UserError

    def periodic(*items):
        config = runs.make_config("linreg", ["eval.periodic=" + ";".join(items)])
        return config.periodic_families()

    fams = periodic("wide=linear_regression:dim={dim},noise=2", "linear_regression:dim=8")
    assert list(fams) == ["wide", "linear_regression"] and fams["wide"].noise == 2.0
    with pytest.raises(UserError, match="names 'linear_regression' twice"):
        periodic("linear_regression:dim=8", "linear_regression:dim=8,noise=1")
    with pytest.raises(UserError, match="inputs of 3 dimensions"):
        periodic("small=linear_regression:dim=3")


def test_plot_training_names_metrics_never_logged(tmp_path):
    import pytest

    from metalearn.core.errors import UserError
    from metalearn.meta.results import plot_training

    records = [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5, "eval/acc@3": 0.5}]
    plot_training(records, ["loss", "eval/acc@3"], tmp_path / "t.png")
    assert (tmp_path / "t.png").stat().st_size > 0
    with pytest.raises(UserError, match=r"\['eval/acc@9'\] were never logged"):
        plot_training(records, ["eval/acc@9"], tmp_path / "u.png")


def test_a_datasets_classes_can_be_the_bursty_classes(tmp_path):
    """With `base` a dataset, class c's inputs are projections of class c's own images: with
    one image per class and no noise, equal classes give equal inputs, distinct ones not."""
    import pytest

    from metalearn.core.errors import UserError

    rng = np.random.default_rng(0)
    path = tmp_path / "chars.npz"
    np.savez(path, x=rng.integers(0, 255, (9, 6, 6), dtype=np.uint8), y=np.arange(9)[::-1])
    fam = data.make("bursty", base=str(path), dim=5, classes=6, heldout=3, noise=0.0)
    assert fam.sample(jax.random.key(1), 64, L).x.shape == (64, L, 5)
    seq_x, _ = fam.sample_sequence(fam.sample_task(jax.random.key(3)), jax.random.key(4), L)
    seq_c, _ = fam.assignment(jax.random.key(3), L)
    seq_x, seq_c = np.asarray(seq_x), np.asarray(seq_c)
    same = seq_c[:, None] == seq_c[None, :]
    dist = np.linalg.norm(seq_x[:, None] - seq_x[None, :], axis=-1)
    assert (dist[same] < 1e-5).all() and (dist[~same] > 1e-3).all()
    fewshot = data.make("bursty", base=str(path), dim=5, classes=6, heldout=3, mode="fewshot")
    assert (np.asarray(fewshot.assignment(jax.random.key(5), L)[0]) >= 6).all()
    with pytest.raises(UserError, match="has 9 classes; classes \\+ heldout = 10"):
        data.make("bursty", base=str(path), classes=7, heldout=3)

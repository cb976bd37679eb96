"""PES meta-training throughput of google/learned_optimization, beside `metalearn bench
estimators` (issue 18's peer figure). Not part of the package: it runs in its own environment.

    git clone https://github.com/google/learned_optimization /tmp/lo/src   # 32186aa was used
    python3 -m venv /tmp/lo/venv
    /tmp/lo/venv/bin/pip install "jax[cpu]" flax optax dm-haiku gin-config absl-py tqdm chex
    LO_SRC=/tmp/lo/src /tmp/lo/venv/bin/python experiments/peers/learned_optimization_pes.py \
        --repeats 10 --prefetch-data

TruncatedPES(VectorizedLOptTruncatedStep(task_family, lopt, ConstantTruncationSchedule(100),
num_tasks=8), trunc_length=10, steps_per_jit=10, std=0.01), as learned_optimization's own
tests build it, on a 64-32-10 MLP task (2,410 parameters, batch 128) over random normal
inputs and random labels (no dataset download). Throughput = num_tasks * trunc_length / median
seconds of one `compute_gradient_estimate` call after 2 warm-up calls, an antithetic pair
counted once, as in experiments/bench_estimators.py. `--prefetch-data` also times the calls
with the batches drawn outside the timer. TensorFlow is replaced by a stub module: the library
imports it at module level but uses it only for summaries, files and dataset loading, none of
which run here (a stub function that is called raises). Prints one JSON line.
"""

# ruff: noqa: E402  (the TensorFlow stub must be in place before the library is imported)

import argparse
import json
import os
import statistics
import sys
import time
import types
import warnings

SRC = os.environ.get("LO_SRC", "/tmp/lo/src")
if SRC not in sys.path:
    sys.path.insert(0, SRC)

warnings.filterwarnings("ignore", category=DeprecationWarning)

# Import the real third-party modules that might probe for TensorFlow *before*
# the fake TensorFlow below is put into sys.modules, so they see no TF.
import flax  # noqa: F401
import flax.training.checkpoints  # noqa: F401
import flax.training.prefetch_iterator  # noqa: F401
import jax
import numpy as onp


# ---------------------------------------------------------------------------
# Shim 1: fake `tensorflow` / `tensorflow.compat.v2` / `tensorflow_datasets`.
# learned_optimization imports TF at module level in summary.py
# (`import tensorflow.compat.v2 as tf; tf.enable_v2_behavior()`, used only by
# the TensorBoard summary writer), filesystem.py (tf.io.gfile, used only for
# checkpoint / log files) and tasks/datasets/base.py (tf + tfds, used only
# for loading real image datasets). None of those code paths run here.
# ---------------------------------------------------------------------------
def _install_fake_tensorflow():
    if "tensorflow" in sys.modules:
        return

    def _unavailable(*a, **k):
        raise RuntimeError("fake tensorflow stub: real TensorFlow not installed")

    tf = types.ModuleType("tensorflow")
    tf.__version__ = "0.0.0-stub"
    tf.enable_v2_behavior = lambda: None
    tf.io = types.SimpleNamespace(
        gfile=types.SimpleNamespace(
            GFile=_unavailable,
            makedirs=_unavailable,
            copy=_unavailable,
            rename=_unavailable,
            exists=lambda p: os.path.exists(p),
            glob=_unavailable,
            remove=_unavailable,
            isdir=os.path.isdir,
        )
    )
    tf.summary = types.SimpleNamespace(create_file_writer=_unavailable)
    compat = types.ModuleType("tensorflow.compat")
    v2 = tf  # `tensorflow.compat.v2` is the same API surface for our purposes
    compat.v2 = v2
    tf.compat = compat
    sys.modules["tensorflow"] = tf
    sys.modules["tensorflow.compat"] = compat
    sys.modules["tensorflow.compat.v2"] = v2

    tfds = types.ModuleType("tensorflow_datasets")
    tfds.load = tfds.builder = tfds.as_numpy = _unavailable
    sys.modules["tensorflow_datasets"] = tfds


_install_fake_tensorflow()

# The mirror HEAD (2026) already uses jax.tree_util.tree_map, core.ShapedArray
# and jax.core.unsafe_am_i_under_a_jit_DO_NOT_USE, which jax 0.10 still has;
# no jax API monkeypatches were needed.

import haiku as hk
import jax.numpy as jnp
from jax import core
from learned_optimization.learned_optimizers import (
    adafac_mlp_lopt,
    mlp_lopt,
)
from learned_optimization.outer_trainers import (
    gradient_learner,
    lopt_truncated_step,
    truncated_pes,
    truncation_schedule,
)
from learned_optimization.tasks import base as tasks_base
from learned_optimization.tasks.datasets import base as datasets_base


# ---------------------------------------------------------------------------
# Synthetic task: 64-32-10 MLP, batch 128, random normal inputs, random labels.
# Written like tasks/fixed/image_mlp.py::_MLPImageTask, with a Datasets object
# built from Python iterators (tasks/datasets/base.py::Datasets).
# ---------------------------------------------------------------------------
def _synthetic_iterator(seed, batch_size, in_dim, num_classes):
    rng = onp.random.default_rng(seed)
    while True:
        yield {
            "image": rng.standard_normal((batch_size, in_dim), dtype=onp.float32),
            "label": rng.integers(0, num_classes, size=(batch_size,), dtype=onp.int32),
        }


def synthetic_datasets(batch_size=128, in_dim=64, num_classes=10):
    its = [_synthetic_iterator(s, batch_size, in_dim, num_classes) for s in range(4)]
    abstract_batch = {
        "image": core.ShapedArray((batch_size, in_dim), jnp.float32),
        "label": core.ShapedArray((batch_size,), jnp.int32),
    }
    return datasets_base.Datasets(
        *its, extra_info={"num_classes": num_classes}, abstract_batch=abstract_batch
    )


class SyntheticMLPTask(tasks_base.Task):
    """64 -> 32 (relu) -> 10 MLP, softmax cross-entropy, synthetic data."""

    def __init__(self, batch_size=128, in_dim=64, hidden=(32,), num_classes=10):
        super().__init__()
        self.datasets = synthetic_datasets(batch_size, in_dim, num_classes)
        self._num_classes = num_classes
        sizes = list(hidden) + [num_classes]

        def _forward(inp):
            return hk.nets.MLP(sizes, activation=jax.nn.relu)(inp)

        self._mod = hk.without_apply_rng(hk.transform(_forward))

    def init(self, key):
        batch = jax.tree_util.tree_map(
            lambda x: jnp.ones(x.shape, x.dtype), self.datasets.abstract_batch
        )
        return self._mod.init(key, batch["image"])

    def loss(self, params, key, data):
        del key
        logits = self._mod.apply(params, data["image"])
        labels = jax.nn.one_hot(data["label"], self._num_classes)
        return jnp.mean(tasks_base.softmax_cross_entropy(logits=logits, labels=labels))

    def normalizer(self, loss):
        maxval = 1.5 * onp.log(self._num_classes)
        loss = jnp.clip(loss, 0, maxval)
        return jnp.nan_to_num(loss, nan=maxval, posinf=maxval, neginf=maxval)


def _block(tree):
    jax.tree_util.tree_map(
        lambda x: x.block_until_ready() if hasattr(x, "block_until_ready") else x, tree
    )


def bench(lopt, *, num_tasks, trunc_length, horizon, std, repeats, warmup, prefetch_data=False):
    """Median seconds of one TruncatedPES.compute_gradient_estimate call.

    Returns a dict {False: (sec, loss, ok)} and, with prefetch_data, also
    {True: ...} timed on the same trainer (same jit caches) with the host-side
    batches built by trainer.get_datas() outside the timer.
    """
    task = SyntheticMLPTask()
    task_family = tasks_base.single_task_to_family(task)
    trunc_sched = truncation_schedule.ConstantTruncationSchedule(horizon)
    truncated_step = lopt_truncated_step.VectorizedLOptTruncatedStep(
        task_family, lopt, trunc_sched, num_tasks=num_tasks
    )
    trainer = truncated_pes.TruncatedPES(
        truncated_step, trunc_length=trunc_length, std=std, steps_per_jit=trunc_length
    )

    # As in outer_trainers/test_utils.py::trainer_smoketest.
    key = jax.random.PRNGKey(0)
    theta = truncated_step.outer_init(key)
    worker_weights = gradient_learner.WorkerWeights(theta, None, gradient_learner.OuterState(1))
    state = trainer.init_worker_state(worker_weights, key=key)
    _block(state)
    res = {}
    for pf in [False, True] if prefetch_data else [False]:
        res[pf], state = _time_calls(trainer, worker_weights, state, repeats, warmup, pf)
    return res


def _time_calls(trainer, worker_weights, state, repeats, warmup, prefetch_data):
    times = []
    for i in range(warmup + repeats):
        k = jax.random.PRNGKey(i + 1)
        datas_list = trainer.get_datas() if prefetch_data else None
        t0 = time.perf_counter()
        out, _ = trainer.compute_gradient_estimate(
            worker_weights, k, state, with_summary=False, datas_list=datas_list
        )
        _block(out.grad)
        _block(out.unroll_state)
        dt = time.perf_counter() - t0
        state = out.unroll_state  # carry the PES state like a real worker loop
        if i >= warmup:
            times.append(dt)
    grad_ok = all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree_util.tree_leaves(out.grad))
    return (statistics.median(times), float(out.mean_loss), grad_ok), state


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--num-tasks", type=int, default=8)
    p.add_argument("--trunc-length", type=int, default=10)
    p.add_argument("--horizon", type=int, default=100)
    p.add_argument("--std", type=float, default=0.01)
    p.add_argument(
        "--prefetch-data",
        action="store_true",
        help="also time with host data fetched outside the timer (passed via datas_list)",
    )
    p.add_argument(
        "--smoke", action="store_true", help="1 repeat, 1 warm-up, 2 tasks, trunc_length 2"
    )
    a = p.parse_args(argv)
    if a.smoke:
        a.repeats, a.warmup, a.num_tasks, a.trunc_length = 1, 1, 2, 2

    lopts = {
        "mlp_lopt": lambda: mlp_lopt.MLPLOpt(hidden_size=32),  # default 32
        "adafac_mlp_lopt": lambda: adafac_mlp_lopt.AdafacMLPLOpt(hidden_size=4),  # default 4
    }
    result = {}
    extra = {}
    for name, make in lopts.items():
        res = bench(
            make(),
            num_tasks=a.num_tasks,
            trunc_length=a.trunc_length,
            horizon=a.horizon,
            std=a.std,
            repeats=a.repeats,
            warmup=a.warmup,
            prefetch_data=a.prefetch_data,
        )
        for pf, (sec, loss, ok) in res.items():
            key = name + ("_prefetched_data" if pf else "")
            result[key] = a.num_tasks * a.trunc_length / sec
            extra[key] = {"median_s": sec, "mean_loss": loss, "grad_finite": ok}
    result.update(
        {
            "jax": jax.__version__,
            "backend": jax.default_backend(),
            "num_tasks": a.num_tasks,
            "trunc_length": a.trunc_length,
            "horizon": a.horizon,
            "std": a.std,
            "repeats": a.repeats,
            "warmup": a.warmup,
            "smoke": a.smoke,
            "unit": "inner steps/s summed over tasks (antithetic pair counted once)",
            "details": extra,
        }
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

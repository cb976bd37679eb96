"""Step time of google/learned_optimization's learned optimizers on `metalearn bench lopt`'s
problem, each as a multiple of Adam's in the same run (issue 18's peer figures). Not part of the
package: it runs in its own environment, set up as in learned_optimization_pes.py beside it.

    LO_SRC=/tmp/lo/src /tmp/lo/venv/bin/python experiments/peers/learned_optimization_step.py

One training step of an MLP 784-1024-1024-10 at batch 128 (forward, backward, the optimizer's
update), jitted, median of `--repeats` after 2 warm-up steps: Adam (learned_optimization's
optax wrapper), MLPLOpt (hidden 32), AdafacMLPLOpt (hidden 4) and VeLO (HyperV2 with an LSTM of
512 and 256 per-parameter MLPs, as its pretrained_optimizers builds it), each with freshly
initialized meta-parameters. Prints one JSON line.
"""

# ruff: noqa: E402  (the TensorFlow stub must be in place before the library is imported)

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import jax
import jax.numpy as jnp
import learned_optimization_pes  # noqa: F401  (puts the source on the path, stubs TensorFlow)
from learned_optimization.learned_optimizers import adafac_mlp_lopt, mlp_lopt
from learned_optimization.optimizers import optax_opts
from learned_optimization.research.general_lopt import hyper_v2

SIZES = (784, 1024, 1024, 10)


def mlp_params():
    keys = jax.random.split(jax.random.key(0), 3)
    return [
        (jax.random.normal(k, (a, b)) * (2 / a) ** 0.5, jnp.zeros(b))
        for k, a, b in zip(keys, SIZES[:-1], SIZES[1:], strict=True)
    ]


def step_seconds(opt, repeats: int) -> float:
    x = jax.random.normal(jax.random.key(1), (128, 784))
    y = jax.random.randint(jax.random.key(2), (128,), 0, 10)

    def loss_fn(params):
        h = x
        for i, (w, b) in enumerate(params):
            h = h @ w + b
            if i < len(params) - 1:
                h = jax.nn.relu(h)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(h), y[:, None], 1))

    @jax.jit
    def step(state):
        loss, grad = jax.value_and_grad(loss_fn)(opt.get_params(state))
        return opt.update(state, grad, loss=loss, key=jax.random.PRNGKey(3))

    state = opt.init(mlp_params(), num_steps=1000, key=jax.random.PRNGKey(4))
    times = []
    for i in range(2 + repeats):
        t = time.perf_counter()
        state = jax.block_until_ready(step(state))
        if i >= 2:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=20)
    a = p.parse_args(argv)
    key = jax.random.PRNGKey(0)
    lopts = {
        "mlp_lopt(hidden=32)": mlp_lopt.MLPLOpt(hidden_size=32),
        "adafac_mlp_lopt(hidden=4)": adafac_mlp_lopt.AdafacMLPLOpt(hidden_size=4),
        "velo(lstm 512, 256 MLPs)": hyper_v2.HyperV2(
            lstm_hidden_size=512, param_inits=256, use_bugged_next_lstm_state=True
        ),
    }
    adam = step_seconds(optax_opts.Adam(1e-3), a.repeats)
    out = {"adam_ms": 1e3 * adam, "jax": jax.__version__}
    for name, lopt in lopts.items():
        seconds = step_seconds(lopt.opt_fn(lopt.init(key)), a.repeats)
        out[name] = {"ms": 1e3 * seconds, "x_adam": seconds / adam}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Checkpoints round-trip every leaf of a training state, empty arrays included."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from metalearn.meta.checkpoint import Checkpointer


def test_checkpoint_round_trip_with_empty_arrays(tmp_path):
    """A learned optimizer's state holds empty arrays (factored statistics of a vector), which
    orbax alone refuses to save."""
    state = {
        "w": jnp.arange(6.0).reshape(2, 3),
        "v_row": jnp.zeros((0, 3)),
        "step": jnp.asarray(7, jnp.int32),
        "key": jax.random.key(3),
    }
    ckpt = Checkpointer(tmp_path / "ckpt")
    ckpt.save(5, state)
    ckpt.close()
    back = Checkpointer(tmp_path / "ckpt")
    assert back.latest_step() == 5
    like = jax.tree_util.tree_map(jnp.zeros_like, state)
    restored = back.restore(5, like)
    back.close()
    np.testing.assert_array_equal(restored["w"], state["w"])
    assert restored["v_row"].shape == (0, 3) and restored["v_row"].dtype == jnp.float32
    assert int(restored["step"]) == 7
    np.testing.assert_array_equal(
        jax.random.key_data(restored["key"]), jax.random.key_data(state["key"])
    )

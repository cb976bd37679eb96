"""VeLO's meta-parameters on disk, in learned_optimization's checkpoint format.

The released VeLO weights are one flax msgpack file (`params` in the folder
gs://gresearch/learned_optimization/pretrained_lopts/aug12_continue_on_bigger_2xbs_200kstep_bigproblem_v2_5620/):
a map {"params": theta, "gen_id": str, "step": int}, theta nested exactly as `VeLO.init` lays
it out. Older checkpoints store the tuple (theta, gen_id, step) as {"0": theta, ...}, and flax
before 2021 wrote the LSTM state namedtuple as {"name", "fields", "values"}; both are read.
Copies published elsewhere (often named `theta.state`) hold the same bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import serialization

from metalearn.core.errors import UserError
from metalearn.core.files import atomic_write_bytes
from metalearn.lopt.velo import VeLO


def _namedtuple_fields(node: Any) -> Any:
    """flax's old namedtuple encoding {"name", "fields": {"0": f0}, "values": {"0": v0}} as a
    plain {f0: v0} dict; anything else is returned as is."""
    if isinstance(node, dict) and set(node) == {"name", "fields", "values"}:
        return {node["fields"][k]: _namedtuple_fields(node["values"][k]) for k in node["fields"]}
    if isinstance(node, dict):
        return {k: _namedtuple_fields(v) for k, v in node.items()}
    return node


def _flat(tree: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(_flat(v, prefix + (k,)))
        return out
    return {prefix: tree}


def _names(keys) -> str:
    return ", ".join("/".join(k) for k in sorted(keys))


def _theta_from(record: Any) -> dict:
    if isinstance(record, dict) and "params" in record:
        return record["params"]
    if isinstance(record, dict) and "0" in record:
        return record["0"]
    return record


def load_velo(path: str | Path, num_steps: int, **kwargs: Any) -> tuple[VeLO, dict]:
    """(VeLO, theta) from a weights file; the LSTM width and bank size are read from the file.

    Example: `velo, theta = load_velo("params", num_steps=5000)` and then
    `velo.optimizer(theta)` is an optax transformation (pass `loss=` to its update).
    """
    path = Path(path)
    try:
        raw = serialization.msgpack_restore(path.read_bytes())
    except FileNotFoundError:
        raise UserError(f"VeLO weights file {str(path)!r} does not exist") from None
    except Exception as e:  # noqa: BLE001 - any decoding failure means the same to the user
        raise UserError(f"{str(path)!r} is not a flax msgpack checkpoint: {e}") from None
    theta = _namedtuple_fields(_theta_from(raw))
    try:
        hidden = int(np.shape(theta["lstm_init_state"]["hidden"])[-1])
        inits = int(np.shape(theta["rnn_params"]["rnn_to_controls"]["b"])[-1])
    except (KeyError, TypeError, IndexError):
        raise UserError(
            f"{str(path)!r} does not hold VeLO weights (expected params/lstm_init_state/hidden "
            "and params/rnn_params/rnn_to_controls)"
        ) from None
    velo = VeLO(num_steps=num_steps, lstm_hidden=hidden, param_inits=inits, **kwargs)
    like = jax.eval_shape(velo.init, jax.random.key(0))
    expected = _flat(like)
    got = _flat(theta)
    missing = set(expected) - set(got)
    if missing:
        raise UserError(f"{str(path)!r} lacks VeLO weights: {_names(missing)}")
    for name, spec in expected.items():
        if tuple(np.shape(got[name])) != spec.shape:
            raise UserError(
                f"{str(path)!r}: {'/'.join(name)} has shape {np.shape(got[name])}, expected "
                f"{spec.shape}"
            )
    extra = set(got) - set(expected)
    if extra:
        print(f"note: {path} holds entries VeLO does not use: {_names(extra)}")
    return velo, _pick(like, theta)


def _pick(like: Any, node: Any) -> Any:
    """node's entries at the places of `like`, as float32 arrays."""
    if isinstance(like, dict):
        return {k: _pick(v, node[k]) for k, v in like.items()}
    return np.asarray(node, np.float32)


def save_velo(theta: dict, path: str | Path, gen_id: str = "", step: int = 0) -> None:
    """Write theta as learned_optimization writes a checkpoint, atomically."""
    record = {
        "params": jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), theta),
        "gen_id": gen_id,
        "step": step,
    }
    atomic_write_bytes(Path(path), serialization.msgpack_serialize(record))

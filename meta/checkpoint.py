"""Checkpoints of the whole training state with orbax (written to a temporary folder and renamed
into place, so a crash never leaves a half-written checkpoint)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


class Checkpointer:
    """Saves and restores a pytree by step under `directory`, keeping the newest `keep`."""

    def __init__(self, directory: Path, keep: int = 2):
        import orbax.checkpoint as ocp  # heavy: imported only by runs that checkpoint

        self._ocp = ocp
        self._manager = ocp.CheckpointManager(
            Path(directory).absolute(),
            # synchronous, so a failed save stops the run at once: after a background save
            # failed, the process hung ten minutes on orbax's signalling thread before exiting
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, create=True, enable_async_checkpointing=False
            ),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: Any) -> None:
        # orbax refuses empty arrays (a learned optimizer's unused factored statistics): they
        # are saved as one-element stand-ins and rebuilt from `like` on restore
        state = jax.tree_util.tree_map(lambda x: _stand_in(x) if _empty(x) else x, state)
        self._manager.save(step, args=self._ocp.args.StandardSave(state))

    def restore(self, step: int, like: Any) -> Any:
        """The state saved at `step`, shaped and typed like `like`."""
        to_struct = self._ocp.utils.to_shape_dtype_struct
        abstract = jax.tree_util.tree_map(
            lambda x: to_struct(_stand_in(x) if _empty(x) else x), like
        )
        restored = self._manager.restore(step, args=self._ocp.args.StandardRestore(abstract))
        return jax.tree_util.tree_map(
            lambda x, r: jnp.zeros(x.shape, x.dtype) if _empty(x) else r, like, restored
        )

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def _empty(x: Any) -> bool:
    return getattr(x, "size", 1) == 0


def _stand_in(x: Any) -> np.ndarray:
    return np.zeros((1,), x.dtype)

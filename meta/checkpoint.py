"""Checkpoints of the whole training state with orbax (written to a temporary folder and renamed
into place, so a crash never leaves a half-written checkpoint)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax


class Checkpointer:
    """Saves and restores a pytree by step under `directory`, keeping the newest `keep`."""

    def __init__(self, directory: Path, keep: int = 2):
        import orbax.checkpoint as ocp  # heavy: imported only by runs that checkpoint

        self._ocp = ocp
        self._manager = ocp.CheckpointManager(
            Path(directory).absolute(),
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: Any) -> None:
        self._manager.save(step, args=self._ocp.args.StandardSave(state))

    def restore(self, step: int, like: Any) -> Any:
        """The state saved at `step`, shaped and typed like `like`."""
        abstract = jax.tree_util.tree_map(self._ocp.utils.to_shape_dtype_struct, like)
        return self._manager.restore(step, args=self._ocp.args.StandardRestore(abstract))

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()

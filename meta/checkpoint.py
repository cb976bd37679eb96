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
        self.directory = Path(directory).absolute()
        self._manager = ocp.CheckpointManager(
            self.directory,
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

    def restore_newest(
        self, like: Any, *, set_aside: bool = False
    ) -> tuple[int | None, Any, list[str]]:
        """The newest checkpoint that restores: (step, state, what was skipped and why).

        A damaged checkpoint (a truncated or unreadable file) is skipped for the one before it;
        with `set_aside` (a run about to write new checkpoints) it is renamed
        `<step>.damaged`, so nothing is deleted and its step can be saved again. (None, None,
        skipped) when none restores.
        """
        skipped, found = [], (None, None)
        for step in sorted(self._manager.all_steps(), reverse=True):
            try:
                found = (step, self.restore(step, like))
                break
            except Exception as e:  # orbax and tensorstore raise many kinds on damaged files
                reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
                note = f"checkpoint {step} is damaged ({type(e).__name__}: {reason})"
                if set_aside:
                    note += f"; kept as checkpoints/{self._set_aside(step)}"
                skipped.append(note)
        if skipped and set_aside:
            self._manager.reload()  # it still lists the steps renamed away
        return *found, skipped

    def _set_aside(self, step: int) -> str:
        """Rename checkpoint `step` to `<step>.damaged` (numbered if that exists); its name."""
        path = self.directory / str(step)
        aside, n = path.with_name(f"{step}.damaged"), 1
        while aside.exists():  # an earlier damaged copy of the same step
            n += 1
            aside = path.with_name(f"{step}.damaged{n}")
        path.rename(aside)
        return aside.name

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def _empty(x: Any) -> bool:
    return getattr(x, "size", 1) == 0


def _stand_in(x: Any) -> np.ndarray:
    return np.zeros((1,), x.dtype)

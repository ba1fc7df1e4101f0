"""Orbax checkpoints of a training state plus JSON metadata, with exact resume.

A checkpoint holds the whole train state pytree (parameters, optimiser states, target network,
RNG key, step counter) and a JSON dict (config, normaliser, dataset spec, ...). Restoring the
latest one and repeating an update on the same batch reproduces it bit for bit. The temporary
folder of a save that was killed before it committed is deleted when the run that owns the
directory next opens it (`cleanup_interrupted_saves`; never by a reader, which could delete a
save another process has under way).
"""

from __future__ import annotations

import os
from typing import Any

import jax

from vlarft.robot_io.interrupts import interrupts_deferred


class Checkpointer:
    """Keeps the newest `keep` checkpoints of one run in `directory`; `cleanup_interrupted_saves`
    (the run that writes them) deletes what a save killed before its commit left."""

    def __init__(self, directory: str | os.PathLike, keep: int = 3, cleanup_interrupted_saves: bool = False):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.directory = os.path.abspath(directory)
        self.manager = ocp.CheckpointManager(
            self.directory,
            # a save killed before its commit leaves a `<step>.orbax-checkpoint-tmp-*` folder
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                                 cleanup_tmp_directories=cleanup_interrupted_saves),
            item_names=("state", "meta"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, meta: dict) -> None:
        """Saves `state` as checkpoint `step` (a step already on disk holds that same state: kept)."""
        ocp = self._ocp
        if step in self.manager.all_steps():
            return
        with interrupts_deferred():
            self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                            meta=ocp.args.JsonSave(meta)), force=True)
            self.manager.wait_until_finished()

    def restore(self, like_state: Any, step: int | None = None) -> tuple[Any, dict]:
        """The state (same structure as `like_state`) and metadata of `step` (default latest)."""
        ocp = self._ocp
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, like_state)
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        return restored.state, restored.meta

    def restore_meta(self, step: int | None = None) -> dict:
        ocp = self._ocp
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta

    def close(self) -> None:
        self.manager.close()

"""The durable-watermark protocol: read progress -> checkpoint -> publish.

An actor may drop a step from its journal only once the step is in a replay checkpoint a
restarted learner would restore (`datasets/replay/reliable.py`). So a save (1) reads every
actor's acknowledged-step count from its progress table, (2) checkpoints the learner and the
replay server, and only then (3) publishes those counts with the parameters as the actors'
durable watermarks: every step counted in (1) was on the server before (2) began. Progress
tagged with another learner incarnation (a late write a restarted server received) is ignored:
that actor keeps its previous watermark.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from vlarft.agents.parameters import ReverbParameterStore
from vlarft.datasets.replay.reliable import read_progress
from vlarft.robot_io.interrupts import interrupts_deferred


class DurableSaver:
    """Saves the learner and the replay, then publishes parameters with durable watermarks.

    Args:
      client: the replay server's client (progress tables live there).
      store: the learner's parameter store (its `durable` array is what gets published).
      checkpoint: state -> None, writes the learner and the replay checkpoints.
      max_actors: actor progress slots.
    """

    def __init__(self, client, store: ReverbParameterStore, checkpoint: Callable[[Any], None], max_actors: int):
        self.client, self.store, self.checkpoint, self.max_actors = client, store, checkpoint, max_actors

    def save(self, state, head_params, version: int) -> np.ndarray:
        """One protocol round; returns the durable watermarks it published. Signals arriving
        meanwhile take effect after it (the checkpoints are never left out of step)."""
        with interrupts_deferred():
            durable = self.durable_now()
            self.checkpoint(state)
            self.store.durable = durable
            self.store.publish(head_params, version)
        return durable

    def durable_now(self) -> np.ndarray:
        """Per slot: the acknowledged count of progress carrying this learner's incarnation,
        else the slot's previous watermark."""
        progress = read_progress(self.client, self.max_actors)
        return np.array([p.acknowledged if p is not None and p.incarnation == self.store.incarnation else kept
                         for p, kept in zip(progress, self.store.durable)], np.int64)

    def actors_finished(self) -> bool:
        """Every actor that ever reported has finished collecting for this learner."""
        progress = [p for p in read_progress(self.client, self.max_actors) if p is not None]
        return bool(progress) and all(p.finished and p.incarnation == self.store.incarnation for p in progress)

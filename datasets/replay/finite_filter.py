"""Keeps non-finite transitions out of learner batches.

Anyone who reaches the replay port can insert items (Reverb has no access control), and one NaN
reward or observation would poison every parameter the learner touches. `NonFiniteFilter` checks
every sampled batch before it reaches the device: a batch with any non-finite float is not
delivered, the offending items are deleted from their tables (so they are not sampled again),
and the drops are counted per table (`dropped`) and logged.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np
import tree

log = logging.getLogger(__name__)

KEY_FIELD = "key"  # the batch field holding each row's Reverb item key (removed by the filter)


def non_finite_rows(batch: Any) -> np.ndarray:
    """bool[B]: rows with a NaN or infinity in any floating-point field of `batch`."""
    leaves = [np.asarray(leaf) for leaf in tree.flatten(batch)]
    rows = len(leaves[0])
    bad = np.zeros(rows, bool)
    for leaf in leaves:
        if leaf.dtype.kind in "fc":
            bad |= ~np.isfinite(leaf.reshape(rows, -1)).all(axis=1)
    return bad


class NonFiniteFilter:
    """`filter(batch)` -> the batch without its `key` field, or None when a row was not finite
    (those items are then deleted from their tables).

    Args:
      client: a Reverb client of the server the batches come from.
      sources: the table of each `source` index of a batch.
    """

    def __init__(self, client, sources: Sequence[str]):
        self.client, self.sources = client, tuple(sources)
        self.dropped = {table: 0 for table in self.sources}

    def filter(self, batch: dict) -> dict | None:
        keys = np.asarray(batch.pop(KEY_FIELD))
        bad = non_finite_rows(batch)
        if not bad.any():
            return batch
        for index, table in enumerate(self.sources):
            rows = bad & (np.asarray(batch["source"]) == index)
            if rows.any():
                self.client.mutate_priorities(table, deletes=[int(k) for k in keys[rows]])
                self.dropped[table] += int(rows.sum())
        log.warning("dropped a batch with %d non-finite transition(s) and deleted them from replay "
                    "(non-finite transitions dropped so far: %s)", int(bad.sum()), self.dropped)
        return None

"""Versioned actor parameters, learner -> actors.

`ParameterStore` shares them between threads of one process; `ReverbParameterStore` carries them
through a one-item Reverb table (`PARAMS_TABLE`, newest item only) on the replay server, so
actors on other machines fetch them by address. Both offer `publish(params, version)` and
`latest() -> (params, version)` (version -1: nothing published yet).
"""

from __future__ import annotations

import threading
from typing import Any

import jax
import numpy as np

PARAMS_TABLE = "params"


class ParameterStore:
    """Latest parameters with a version number, shared between threads."""

    def __init__(self):
        self._lock = threading.Lock()
        self._params, self._version = None, -1

    def publish(self, params: Any, version: int) -> None:
        with self._lock:
            self._params, self._version = params, version

    def latest(self) -> tuple[Any, int]:
        with self._lock:
            return self._params, self._version


def params_table():
    """The one-item table holding the newest published parameters."""
    import reverb

    return reverb.Table(name=PARAMS_TABLE, sampler=reverb.selectors.Lifo(), remover=reverb.selectors.Fifo(),
                        max_size=1, rate_limiter=reverb.rate_limiters.MinSize(1))


class ReverbParameterStore:
    """Parameters in the replay server's `params` table; `template` gives their tree structure."""

    def __init__(self, client, template: Any):
        self.client = client
        self.treedef = jax.tree_util.tree_structure(template)

    def publish(self, params: Any, version: int) -> None:
        leaves = [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(jax.device_get(params))]
        self.client.insert(leaves + [np.int64(version)], {PARAMS_TABLE: 1.0})

    def latest(self) -> tuple[Any, int]:
        if self.client.server_info()[PARAMS_TABLE].current_size == 0:
            return None, -1
        data = next(iter(self.client.sample(PARAMS_TABLE, num_samples=1)))[0].data
        return jax.tree_util.tree_unflatten(self.treedef, list(data[:-1])), int(data[-1])

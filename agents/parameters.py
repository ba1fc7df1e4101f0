"""Versioned actor parameters, learner -> actors.

`ReverbParameterStore` carries them through a one-item Reverb table (`PARAMS_TABLE`, newest item
only) on the replay server, so actors in the same process or on other machines fetch them the
same way: `publish(params, version)` and `latest() -> (params, version)` (version -1: nothing
published yet).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

PARAMS_TABLE = "params"


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

"""Versioned actor parameters, learner -> actors, with the actors' durable replay watermarks.

`ReverbParameterStore` carries them through a one-item Reverb table (`PARAMS_TABLE`, newest item
only) on the replay server, so actors in the same process or on other machines fetch them the
same way. An item is the parameter leaves, then the learner step (`version`), the learner
process's random `incarnation` (a restarted learner has a new one, so actors adopt its parameters
even when its restored version is older than theirs), and `durable`: per actor slot, how many of
that actor's steps are in the newest replay checkpoint (see `datasets/replay/reliable.py`).
"""

from __future__ import annotations

import dataclasses
import secrets
from typing import Any

import jax
import numpy as np

PARAMS_TABLE = "params"


def params_table():
    """The one-item table holding the newest published parameters."""
    import reverb

    return reverb.Table(name=PARAMS_TABLE, sampler=reverb.selectors.Lifo(), remover=reverb.selectors.Fifo(),
                        max_size=1, rate_limiter=reverb.rate_limiters.MinSize(1))


@dataclasses.dataclass(frozen=True)
class Published:
    """The newest published parameters."""

    params: Any
    version: int
    incarnation: int
    durable: np.ndarray  # int64[max_actors]

    def durable_for(self, actor_index: int) -> int:
        return int(self.durable[actor_index])


class ReverbParameterStore:
    """Parameters in the replay server's `params` table; `template` gives their tree structure.

    `client` may be replaced (an actor that reconnected). The learner sets `durable` before the
    publication that precedes each replay checkpoint.
    """

    def __init__(self, client, template: Any, max_actors: int = 8):
        self.client = client
        self.treedef = jax.tree_util.tree_structure(template)
        self.num_leaves = self.treedef.num_leaves
        self.incarnation = secrets.randbits(62)
        self.durable = np.zeros(max_actors, np.int64)

    def publish(self, params: Any, version: int) -> None:
        leaves = [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(jax.device_get(params))]
        self.client.insert(leaves + [np.int64(version), np.int64(self.incarnation), self.durable.copy()],
                           {PARAMS_TABLE: 1.0})

    def latest(self) -> Published | None:
        """The newest publication, or None before the first."""
        if self.client.server_info(timeout=10)[PARAMS_TABLE].current_size == 0:
            return None
        data = next(iter(self.client.sample(PARAMS_TABLE, num_samples=1)))[0].data
        leaves, (version, incarnation, durable) = list(data[:self.num_leaves]), data[self.num_leaves:]
        return Published(jax.tree_util.tree_unflatten(self.treedef, leaves), int(version), int(incarnation),
                         np.asarray(durable, np.int64))

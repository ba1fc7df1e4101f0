"""Data-parallel learner updates over local JAX devices, with `jax.sharding`.

`DataParallel` holds a one-axis `Mesh` ("batch") over the chosen devices. A learner item (one
step's rows, see `agents/learner.py: split_rows`) is placed with its leading axis sharded over the
mesh (`NamedSharding(mesh, P("batch"))`); the learner state (parameters, optimiser states,
target network, RNG key) is replicated on every device (`P()`). The learner's jitted step then
runs as one SPMD program: XLA partitions it after those input shardings and inserts the
gradient all-reduces itself (no hand-written collectives). One device = the plain update.

Checkpoints stay device-independent: orbax writes the global arrays, and a restore takes its
shardings from the state it is given (`Checkpointer.restore(parallel.replicate(state))`), so a
checkpoint written on 2 devices restores on 1 and the other way round.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

BATCH_AXIS = "batch"


def select_devices(spec: str = "", available: Sequence[jax.Device] | None = None) -> list[jax.Device]:
    """The devices `spec` names among `available` (default `jax.local_devices()`):
    "" or "all" = every local device; "N" = the first N; "0,2" = those device ids."""
    available = list(jax.local_devices() if available is None else available)
    spec = spec.strip()
    if spec in ("", "all"):
        return available
    by_id = {d.id: d for d in available}
    try:
        if "," not in spec:
            count = int(spec)
            if not 1 <= count <= len(available):
                raise ValueError
            return available[:count]
        ids = [int(part) for part in spec.split(",") if part.strip()]
        if not ids or len(set(ids)) != len(ids) or not all(i in by_id for i in ids):
            raise ValueError
    except ValueError:
        raise ValueError(f"--devices={spec!r}: give 'all', a count 1..{len(available)} or distinct device ids "
                         f"among {sorted(by_id)} (local {available[0].platform} devices)") from None
    return [by_id[i] for i in ids]


class DataParallel:
    """Places learner items (rows sharded) and states (replicated) on a mesh of `devices`."""

    def __init__(self, devices: Sequence[jax.Device]):
        if not devices:
            raise ValueError("DataParallel needs at least one device")
        self.devices = list(devices)
        self.mesh = Mesh(np.array(self.devices), (BATCH_AXIS,))
        self.rows = NamedSharding(self.mesh, PartitionSpec(BATCH_AXIS))
        self.replicated = NamedSharding(self.mesh, PartitionSpec())

    @classmethod
    def from_flag(cls, spec: str = "") -> "DataParallel":
        return cls(select_devices(spec))

    @property
    def size(self) -> int:
        return len(self.devices)

    def check_rows(self, rows: int) -> None:
        """Refuses a learner item of `rows` rows that does not split evenly over the devices."""
        if rows % self.size:
            raise ValueError(f"a learner item of {rows} rows cannot be split over {self.size} devices: choose a "
                             f"batch size whose rows per step are a multiple of {self.size} (or fewer --devices)")

    def batch(self, item: Any) -> Any:
        """`item`'s arrays with their leading (row) axis split evenly over the devices."""
        for x in jax.tree_util.tree_leaves(item):
            self.check_rows(np.shape(x)[0] if np.ndim(x) else 0)
        return jax.device_put(item, self.rows)

    def replicate(self, state: Any) -> Any:
        """`state` with a full copy of every array on every device."""
        return jax.device_put(state, self.replicated)

    def describe(self) -> str:
        return f"{self.size} {self.devices[0].platform} device(s) {[d.id for d in self.devices]}"

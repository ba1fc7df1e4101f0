"""Actor slots on the learner's replay server: how many there are, and who holds each.

The learner offers `slots` actor slots (`--actor_slots`): each has its progress table
(`reliable.py`) and a one-item claim table `actor_claim_<i>` holding [owner, beat, released,
pid]. An actor claims its slot before it streams (`SlotClaim.acquire`) and renews the claim every
`heartbeat_s` from a background thread; it releases it when it stops. A slot whose claim was
neither released nor renewed for `lease_s` is stale (its actor died) and may be taken over, so a
killed actor restarts on its own slot after at most `lease_s`; a claim that is renewed meanwhile
belongs to a live actor and the newcomer is refused (`SlotInUse`). Staleness is judged by the
renewals the newcomer sees, never by comparing clocks of different machines.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time

import numpy as np
import reverb

from vlarft.datasets.replay.tables import ReplayError, connect

log = logging.getLogger(__name__)
CLAIM_PREFIX = "actor_claim_"


class SlotInUse(ReplayError):
    """Another live actor holds the slot."""


def claim_table_name(slot: int) -> str:
    return f"{CLAIM_PREFIX}{slot}"


def claim_tables(slots: int) -> list[reverb.Table]:
    """One one-item claim table per actor slot."""
    return [reverb.Table(name=claim_table_name(i), sampler=reverb.selectors.Lifo(), remover=reverb.selectors.Fifo(),
                         max_size=1, rate_limiter=reverb.rate_limiters.MinSize(1)) for i in range(slots)]


def slot_count(client: reverb.Client) -> int:
    """The actor slots the server offers (its claim tables)."""
    return sum(name.startswith(CLAIM_PREFIX) for name in client.server_info(timeout=10))


def _read_claim(client: reverb.Client, table: str) -> tuple[int, int, bool, int] | None:
    if client.server_info(timeout=10)[table].current_size == 0:
        return None
    owner, beat, released, pid = (int(x) for x in next(iter(client.sample(table, num_samples=1)))[0].data)
    return owner, beat, bool(released), pid


class SlotClaim:
    """This actor's claim on slot `slot` of the server at `address`.

    `acquire()` takes a free, released or stale slot (waiting up to `lease_s` to tell a stale
    claim from a live one) or raises `SlotInUse`; a daemon thread then renews the claim every
    `heartbeat_s` (reconnecting when the server restarts); `release()` stops it and frees the slot.
    """

    def __init__(self, address: str, slot: int, *, heartbeat_s: float = 1.0, lease_s: float = 5.0):
        if lease_s <= 2 * heartbeat_s:
            raise ValueError(f"the slot lease ({lease_s:g} s) must exceed two heartbeats ({heartbeat_s:g} s)")
        self.address, self.slot, self.heartbeat_s, self.lease_s = address, slot, heartbeat_s, lease_s
        self.table = claim_table_name(slot)
        self.owner = secrets.randbits(62)
        self.beat = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self, client: reverb.Client) -> "SlotClaim":
        slots = slot_count(client)
        if not 0 <= self.slot < slots:
            raise ValueError(f"--actor_index={self.slot}: the learner at {self.address} offers actor slots "
                             f"0..{slots - 1} (its --actor_slots={slots})")
        seen = _read_claim(client, self.table)
        if seen is not None and not seen[2]:  # held: wait for a renewal (live) or none (stale)
            deadline = time.monotonic() + self.lease_s
            while time.monotonic() < deadline:
                time.sleep(min(self.heartbeat_s / 2, 0.5))
                now = _read_claim(client, self.table)
                if now is not None and now[2]:
                    break  # released meanwhile
                if now != seen:
                    raise SlotInUse(f"actor slot {self.slot} of the learner at {self.address} is in use by another "
                                    f"live actor (owner {now[0]:x}, pid {now[3]}, its claim renewed within "
                                    f"{self.lease_s:g} s): start this actor with a free --actor_index, or stop "
                                    f"the other one first")
            log.warning("actor slot %d: taking over the stale claim of owner %x (pid %d)", self.slot, seen[0], seen[3])
        self._write(client)
        self._thread = threading.Thread(target=self._renew, daemon=True, name=f"slot-claim-{self.slot}")
        self._thread.start()
        return self

    def release(self) -> None:
        """Stops renewing and marks the slot free (best effort: a dead server frees it by the lease)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.heartbeat_s + 5)
        try:
            self._write(connect(self.address, timeout_s=2.0), released=True)
        except Exception as error:  # noqa: BLE001 - the server is gone: the lease frees the slot
            log.info("actor slot %d not released (%s); it frees after %g s", self.slot, error, self.lease_s)

    def _write(self, client: reverb.Client, released: bool = False) -> None:
        client.insert([np.int64(self.owner), np.int64(self.beat), np.int64(released), np.int64(os.getpid())],
                      {self.table: 1.0})

    def _renew(self) -> None:
        client = None
        while not self._stop.wait(self.heartbeat_s):
            self.beat += 1
            try:
                client = client or connect(self.address, timeout_s=2.0)
                self._write(client)
            except Exception:  # noqa: BLE001 - server down: retry with a new connection next beat
                client = None

    def __enter__(self) -> "SlotClaim":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

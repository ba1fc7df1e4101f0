"""Actor-side streaming that survives the replay server dying: a journal, progress, resending.

An online actor appends every step through a `ReliableWriter`. It keeps each step in a local
journal (record `n` = the actor's n-th appended step, episode ends marked), writes it to Reverb,
and once the server acknowledged it (flush) records the count of acknowledged records in its own
one-item progress table (`actor_progress_<index>`, one per actor, `progress_tables`).

Durability. Before it checkpoints the server, the learner reads every actor's progress; once the
checkpoint is written it publishes those counts as the *durable watermarks* (with the
parameters, `agents/parameters.py`): every record below one was on the server before the
checkpoint began, so it is in the checkpoint. The actor drops journal records below its
watermark. Progress is tagged with the learner incarnation the actor last synchronised with, and
a learner only trusts progress carrying its own: a progress write that Reverb's client delivered
late to a restarted server (counting steps that server never got) is ignored.

Failure. When the server stops answering, the actor keeps acting (with its last parameters) and
journaling; every `retry_every_s` it tries to reconnect. On success it fetches its watermark `W`
from the server (a learner restarted from a checkpoint publishes that checkpoint's watermarks)
and re-sends journal records `W, W+1, ...` (re-appending record W-1 first, without an item, when
W is mid-episode, so the transition W-1 -> W is rebuilt). So no step the server acknowledged is
lost; steps acknowledged after the watermark was read may be sent twice (at most the steps
between the learner reading the watermark and its checkpoint, or, after a network blip without a
restart, the steps since the last checkpoint).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable, Mapping

import numpy as np
import reverb

from vlarft.datasets.replay.tables import ReplayError, connect

log = logging.getLogger(__name__)
PROGRESS_PREFIX = "actor_progress_"


def progress_table_name(actor_index: int) -> str:
    return f"{PROGRESS_PREFIX}{actor_index}"


def progress_tables(max_actors: int) -> list[reverb.Table]:
    """One one-item table per actor slot: [acknowledged records, finished flag, incarnation]."""
    return [reverb.Table(name=progress_table_name(i), sampler=reverb.selectors.Lifo(),
                         remover=reverb.selectors.Fifo(), max_size=1, rate_limiter=reverb.rate_limiters.MinSize(1))
            for i in range(max_actors)]


@dataclasses.dataclass(frozen=True)
class ActorProgress:
    acknowledged: int  # records the server acknowledged
    finished: bool  # the actor has collected all its steps
    incarnation: int  # of the learner the actor had synchronised with when it wrote this
    stats: CollectionStats | None = None  # what the actor reports about its collection


@dataclasses.dataclass(frozen=True)
class CollectionStats:
    """An actor's collection figures, sent with its progress (`ReliableWriter.stats`)."""

    env_steps: int = 0  # env steps in all (a restarted actor's earlier runs included)
    run_steps: int = 0  # env steps of the actor's current process
    episodes: int = 0  # episodes of the current process
    intervention_steps: int = 0  # steps a human drove, current process
    run_s: float = 0.0  # seconds the current process has been collecting

    @property
    def steps_per_s(self) -> float:
        return self.run_steps / self.run_s if self.run_s > 0 else 0.0

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "steps_per_s": self.steps_per_s,
                "intervention_rate": self.intervention_steps / max(self.run_steps, 1)}


def read_progress(client: reverb.Client, max_actors: int) -> list[ActorProgress | None]:
    """Every actor slot's progress (None: that actor never wrote)."""
    info = client.server_info(timeout=10)
    out: list[ActorProgress | None] = []
    for i in range(max_actors):
        name = progress_table_name(i)
        if name not in info or info[name].current_size == 0:
            out.append(None)
            continue
        data = next(iter(client.sample(name, num_samples=1)))[0].data
        stats = CollectionStats(*(int(x) for x in data[3:7]), float(data[7])) if len(data) >= 8 else None
        out.append(ActorProgress(int(data[0]), bool(data[1]), int(data[2]), stats))
    return out


@dataclasses.dataclass
class _Record:
    step: Mapping
    ends_episode: bool = False


class ReliableWriter:
    """`append(step)` / `end_episode()` like `TransitionWriter`, surviving server restarts.

    Args:
      address: HOST:PORT of the replay server.
      make_writer: client -> a TransitionWriter routing steps to tables.
      actor_index: this actor's progress slot.
      watermark: client -> this actor's durable watermark on that server (from the published
        parameters), or None when the server has none (a fresh server: resend everything kept).
      client: an already connected client (else one is made).
      retry_every_s: seconds between reconnection attempts while the server is unreachable.
      ack_timeout_s: how long to wait for an acknowledgement before checking the server is alive.
      stop: () -> True once the actor shuts down; waiting for an acknowledgement then gives up.
      max_journal: records kept at most; beyond it the oldest are dropped with a warning (they
        were not known durable: a long outage loses them if the server then restarts).
      first_record: the index of this writer's first record: the slot's acknowledged count when an
        actor restarts on its slot (its earlier records are on the server; numbering goes on).
    """

    def __init__(self, address: str, make_writer: Callable[[reverb.Client], Any], *, actor_index: int = 0,
                 watermark: Callable[[reverb.Client], int | None] = lambda client: None, client: reverb.Client | None = None,
                 retry_every_s: float = 2.0, ack_timeout_s: float = 1.0, max_journal: int = 200_000,
                 stop: Callable[[], bool] = lambda: False, first_record: int = 0):
        self.address, self.make_writer, self.actor_index = address, make_writer, actor_index
        self.watermark, self.retry_every_s, self.max_journal = watermark, retry_every_s, max_journal
        self.ack_timeout_s, self.stop = ack_timeout_s, stop
        self.progress_table = progress_table_name(actor_index)
        self.journal: list[_Record] = []
        self.base = first_record  # global index of journal[0]
        self.acknowledged = first_record  # records the (current) server acknowledged
        self.stats = CollectionStats()  # sent with every progress write
        self.resent, self.reconnects, self.dropped = 0, 0, 0
        self.client = client or connect(address, timeout_s=30.0)
        self.writer = self.make_writer(self.client)
        self._last_attempt = 0.0
        self._finished = False
        self.incarnation = 0  # the learner incarnation this actor last synchronised with (progress tag)

    @property
    def connected(self) -> bool:
        return self.writer is not None

    @property
    def records(self) -> int:
        return self.base + len(self.journal)

    @property
    def items_written(self) -> dict:
        return dict(self.writer.items_written) if self.writer is not None else {}

    def append(self, step: Mapping) -> None:
        """Journals the step, streams it and waits for the server's acknowledgement."""
        self._journal(_Record(step))
        self._send(lambda: (self.writer.append(step), self._acknowledged(self.writer.flush)))

    def end_episode(self) -> None:
        self.journal[-1].ends_episode = True
        self._send(lambda: self._acknowledged(self.writer.end_episode))

    def finish(self, timeout_s: float = 600.0) -> None:
        """Marks this actor finished in its progress table (the learner may stop when all are);
        first waits (up to `timeout_s`) for an unreachable server to come back and take the journal."""
        self._finished = True
        deadline = time.monotonic() + timeout_s
        while True:
            self._send(None)
            if self.connected:
                return
            if time.monotonic() > deadline:
                raise ReplayError(f"replay server {self.address} unreachable for {timeout_s:g} s at the end of "
                                  f"collection: {self.records - self.acknowledged} step(s) were not delivered "
                                  f"(they are in the online RLDS episode files)")
            time.sleep(min(self.retry_every_s, 1.0) or 0.1)

    def resync(self) -> None:
        """The server restarted under us (a new learner incarnation): reconnect now and re-send
        from the watermark it reports (Reverb's own writer may have silently reconnected)."""
        self._drop_connection()
        self._last_attempt = 0.0
        self._reconnect()

    def trim(self, durable: int) -> None:
        """Drops journal records below `durable` (keeping the one before it, see `resend`)."""
        keep_from = max(self.base, durable - 1)
        del self.journal[:keep_from - self.base]
        self.base = keep_from

    def _journal(self, record: _Record) -> None:
        self.journal.append(record)
        if len(self.journal) > self.max_journal:
            log.warning("replay journal full (%d records): dropping the oldest, not yet known durable",
                        self.max_journal)
            del self.journal[0]
            self.base += 1
            self.dropped += 1

    def _send(self, operation: Callable[[], Any] | None) -> None:
        if not self.connected:
            self._reconnect()  # on success it re-sends the journal, this record included
            return
        try:
            if operation is not None:
                operation()
            self._record_progress()
        except Exception as error:  # noqa: BLE001 - any gRPC/Reverb failure means the same here
            log.warning("replay server %s stopped answering (%s); acting on, journaling steps, "
                        "retrying every %.0f s", self.address, str(error).splitlines()[0][:200], self.retry_every_s)
            self._drop_connection()

    def _acknowledged(self, operation: Callable[..., Any]) -> None:
        """Runs flush / end_episode until the server confirms; a rate limiter holding the actor
        back (the server answers) is waited out, a server that does not answer raises."""
        while True:
            try:
                return operation(timeout_ms=int(self.ack_timeout_s * 1000))
            except reverb.errors.DeadlineExceededError:
                if self.stop():  # shutting down: a learner no longer sampling would hold us forever
                    raise ReplayError(f"stopped while {self.address} had not acknowledged a step") from None
                self.client.server_info(timeout=2)

    def _record_progress(self) -> None:
        self.acknowledged = self.records
        stats = self.stats
        self.client.insert([np.int64(self.acknowledged), np.int64(self._finished), np.int64(self.incarnation),
                            *(np.int64(x) for x in (stats.env_steps, stats.run_steps, stats.episodes,
                                                    stats.intervention_steps)), np.float64(stats.run_s)],
                           {self.progress_table: 1.0})

    def _drop_connection(self) -> None:
        try:
            if self.writer is not None:
                self.writer.close()
        except Exception:  # noqa: BLE001 - the server is gone; nothing to flush to
            pass
        self.writer = None
        self._last_attempt = time.monotonic()

    def _reconnect(self) -> bool:
        if time.monotonic() - self._last_attempt < self.retry_every_s:
            return False
        self._last_attempt = time.monotonic()
        try:
            self.client = connect(self.address, timeout_s=2.0)
            self.writer = self.make_writer(self.client)
            self._resend()
        except Exception as error:  # noqa: BLE001 - ReplayError from connect, or any Reverb failure
            log.info("replay server %s still unreachable: %s", self.address, str(error).splitlines()[0][:200])
            self._drop_connection()
            return False
        self.reconnects += 1
        log.warning("reconnected to replay server %s; re-sent %d journaled step(s)", self.address, self.resent)
        return True

    def _resend(self) -> None:
        start = self.watermark(self.client)
        start = self.base if start is None else max(start, self.base)
        if start > self.records:
            raise ReplayError(f"the replay server {self.address} reports {start} durable steps of actor "
                              f"{self.actor_index}, more than it ever sent ({self.records})")
        first = start - self.base
        if first > 0 and not self.journal[first - 1].ends_episode:
            self.writer.append(self.journal[first - 1].step)  # context only: creates no item
        for record in self.journal[first:]:
            self.writer.append(record.step)
            if record.ends_episode:
                self._acknowledged(self.writer.end_episode)
        self._acknowledged(self.writer.flush)
        self.resent += len(self.journal) - first
        self._record_progress()

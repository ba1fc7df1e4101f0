"""Mixed training batches: rows from several tables, concatenated, on the JAX device."""

from __future__ import annotations

import queue
import threading
from typing import Any, Mapping

import jax
import numpy as np
import reverb
import tensorflow as tf

from vlarft.datasets.replay.finite_filter import KEY_FIELD, NonFiniteFilter
from vlarft.datasets.replay.packing import StepLayout, layout_of_stored
from vlarft.datasets.replay.tables import ReplayConfig, ReplayError, connect, mixed_online_rows

_END = object()


def mixed_counts(batch_size: int, online_fraction: float, *, online_table: str = "online",
                 demo_table: str = "demo") -> dict[str, int]:
    """{online_table: n, demo_table: batch_size - n}, n = round(batch_size * online_fraction),
    online first; a table with no rows is left out (online_fraction 0 -> demo only)."""
    online = mixed_online_rows(batch_size, online_fraction)
    counts = {online_table: online, demo_table: batch_size - online}
    return {table: n for table, n in counts.items() if n > 0}


class BatchIterator:
    """Yields batches sampled from Reverb tables as nested dicts of jax arrays.

    Each batch concatenates, along the batch axis and in `tables_and_counts` order, that many
    items of every table, plus `source`: int32[B], the index into `sources` (the table names) of
    the table each row came from. A background thread keeps `prefetch` batches already placed
    with `jax.device_put(batch, device)` (`device`: a jax Device or Sharding; None = default).
    A batch holding a non-finite value is never delivered: its bad items are deleted from
    replay and counted in `dropped_non_finite` (`finite_filter.py`).

    Args:
      address: server address, e.g. "localhost:PORT".
      tables_and_counts: table name -> rows per batch.
      signature: the item signature (`transition_signature`); None = read from the server.
      rate_limiter_timeout_ms: stop iterating when a table's limiter blocks sampling this
        long (-1: wait forever).
      liveness_check_s: while waiting this long for a batch, check that the server still
        answers; a dead server raises ReplayError instead of blocking forever.
      sampler_workers: sampling threads per table (`ReplayConfig.sampler_workers`).
    """

    def __init__(self, address: str, tables_and_counts: Mapping[str, int], signature: Any = None, *,
                 prefetch: int = 2, device: Any = None, rate_limiter_timeout_ms: int = -1,
                 liveness_check_s: float = 10.0, sampler_workers: int = ReplayConfig.sampler_workers):
        if not tables_and_counts or min(tables_and_counts.values()) < 1:
            raise ValueError(f"every table needs >= 1 row per batch, got {dict(tables_and_counts)}")
        self.address = address
        self.sources = tuple(tables_and_counts)
        self.batch_size = sum(tables_and_counts.values())
        layout = (_server_layout(address, self.sources) if signature is None
                  else StepLayout.of_signature(signature))
        dataset = _mixed_dataset(address, tables_and_counts, layout, rate_limiter_timeout_ms, prefetch,
                                 sampler_workers)
        self._device = device
        self._finite = NonFiniteFilter(reverb.Client(address), self.sources)
        self._liveness_check_s = liveness_check_s
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
        self._stop = threading.Event()
        self._done = False
        self._waited_s = 0.0
        self._thread = threading.Thread(target=self._produce, args=(dataset,), daemon=True,
                                        name=f"replay-batches-{address}")
        self._thread.start()

    def __iter__(self) -> "BatchIterator":
        return self

    def __next__(self) -> dict:
        if self._done:
            raise StopIteration
        return self._deliver(self._get())

    def _deliver(self, item) -> dict:
        if item is _END or isinstance(item, BaseException):
            self._done = True
            if item is _END:
                raise StopIteration
            raise ReplayError(f"sampling {self.sources} from {self.address} failed: {item}") from item
        return item

    def next_within(self, timeout_s: float):
        """The next batch, or None when none arrived within `timeout_s` (a rate limiter holds
        sampling back; the request stays pending). Raises StopIteration / ReplayError as
        `next` does."""
        if self._done:
            raise StopIteration
        try:
            item = self._queue.get(timeout=timeout_s)
        except queue.Empty:
            self._waited_s += timeout_s
            if self._waited_s >= self._liveness_check_s:
                self._waited_s = 0.0
                self._check_alive()
            return None
        self._waited_s = 0.0
        return self._deliver(item)

    def _get(self):
        while True:
            try:
                return self._queue.get(timeout=self._liveness_check_s)
            except queue.Empty:  # blocked by a rate limiter, or the server is gone?
                self._check_alive()

    def _check_alive(self) -> None:
        try:
            connect(self.address, timeout_s=min(5.0, max(1.0, self._liveness_check_s)))
        except ReplayError as e:
            self._done = True
            raise ReplayError(f"no batch from {self.sources}: {e}") from None

    @property
    def dropped_non_finite(self) -> dict[str, int]:
        """Non-finite transitions dropped so far, per table."""
        return dict(self._finite.dropped)

    def close(self) -> None:
        """Stops the background thread (it exits at its next batch)."""
        self._stop.set()
        self._done = True
        while not self._queue.empty():
            self._queue.get_nowait()
        self._thread.join(timeout=5.0)

    def __enter__(self) -> "BatchIterator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _produce(self, dataset: tf.data.Dataset) -> None:
        try:
            for batch in dataset.as_numpy_iterator():
                batch = self._finite.filter(batch)
                if batch is not None and not self._put(jax.device_put(batch, self._device)):
                    return
            self._put(_END)
        except Exception as e:  # handed to the consumer
            self._put(e)

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False


def make_batch_iterator(address: str, tables_and_counts: Mapping[str, int], signature: Any = None,
                        prefetch: int = 2, device: Any = None, **kwargs) -> BatchIterator:
    """See BatchIterator."""
    return BatchIterator(address, tables_and_counts, signature, prefetch=prefetch, device=device,
                         **kwargs)


def _server_layout(address: str, tables) -> StepLayout:
    info = connect(address).server_info(timeout=30)
    missing = [t for t in tables if t not in info]
    if missing:
        raise ValueError(f"server {address} has no table(s) {missing}; tables: {sorted(info)}")
    layout = layout_of_stored(info[tables[0]].signature)
    if layout is None:
        raise ValueError(f"table {tables[0]!r} at {address} does not hold packed transitions "
                         f"(`make_tables`); its signature: {info[tables[0]].signature}")
    return layout


def _mixed_dataset(address, tables_and_counts, layout: StepLayout, timeout_ms, prefetch,
                   sampler_workers: int) -> tf.data.Dataset:
    stored = layout.stored_signature()
    dtypes = tf.nest.map_structure(lambda spec: spec.dtype, stored)
    shapes = tf.nest.map_structure(lambda spec: spec.shape, stored)

    def table_batches(table: str, count: int) -> tf.data.Dataset:
        # Two batches' rows in flight, split among the workers (each keeps at least one).
        workers = max(1, min(sampler_workers, 2 * count))
        return (reverb.TrajectoryDataset(address, table, dtypes, shapes,
                                         max_in_flight_samples_per_worker=-(-2 * count // workers),
                                         num_workers_per_iterator=workers,
                                         rate_limiter_timeout_ms=timeout_ms)
                .batch(count, drop_remainder=True))

    # Batch whole ReplaySamples and drop `info` per batch: a per-sample map halves throughput.
    parts = [table_batches(table, count) for table, count in tables_and_counts.items()]
    counts = list(tables_and_counts.values())
    source = tf.constant(np.repeat(np.arange(len(counts), dtype=np.int32), counts))

    def concat(*samples):
        batch = layout.unpack(tf.nest.map_structure(lambda *xs: tf.concat(xs, axis=0), *(s.data for s in samples)))
        batch["source"] = source
        batch[KEY_FIELD] = tf.concat([s.info.key for s in samples], axis=0)  # for NonFiniteFilter
        return batch

    return tf.data.Dataset.zip(tuple(parts)).map(concat).prefetch(max(1, prefetch))

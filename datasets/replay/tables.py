"""Replay tables, the transition signature, and the Reverb server/client plumbing.

Bind address: Reverb 0.14 has no bind-address option. Its C++ server always listens on
`[::]:PORT` (every interface, IPv4 and IPv6; reverb/cc/platform/default/server.cc) with insecure
gRPC credentials, so anyone who can reach the host can read and write the replay. Run it on a
trusted network or behind a firewall (`exposure_notice` says how; WORKSPACE.md, 'Threat model
and guarantees'); `ReplayServer.address` is the loopback address `localhost:PORT` that same-host
clients use.
"""

from __future__ import annotations

import dataclasses
import errno
import math
import os
import socket
import time
from typing import Any, Iterator, Sequence

import reverb
import tensorflow as tf
import tree
from reverb.reverb_types import TableInfo

from vlarft.datasets.replay.packing import (STEP_FIELDS, StepLayout, layout_of_stored,  # noqa: F401
                                            transition_of_stored)
from vlarft.datasets.schema import EpisodeSpec


class ReplayError(RuntimeError):
    """A replay server cannot be started, reached or used as configured."""


@dataclasses.dataclass(frozen=True)
class ReplayConfig:
    """The two replay tables and the online update-to-data ratio.

    Attributes:
      demo_table: name of the demonstration table (offline data and human interventions).
      online_table: name of the online table (every transition the actor collects).
      max_size_demo: items kept in the demo table; the oldest go first (1_000_000).
      max_size_online: items kept in the online table; the oldest go first (200_000).
      min_size_demo: demo items before sampling may start (MinSize limiter; 1).
      min_size_online: online items before sampling may start (100): a warm-up that earns
        no samples (Reverb's SampleToInsertRatio offset convention).
      samples_per_insert: online rows the learner may sample per inserted online transition
        after the warm-up (SampleToInsertRatio). Default 128 = TrainConfig.batch_size 256 x
        online_fraction 0.5 x 1 update per env step; `for_training` derives it.
      error_buffer: the limiter's tolerance (Reverb's `error_buffer`: a number or an absolute
        (min_diff, max_diff) range). None: the learner may sample 2 x samples_per_insert rows
        ahead of the actor (so it may take (inserts - min_size_online + 2) x samples_per_insert
        rows in all), while the actor (a robot, which must not stall) may run up to
        `max_size_online` inserts ahead of the learner.
      observation_keys: observation fields stored per step and item: `state`, `image_<camera>`
        and/or `embedding` (the cached backbone embedding, a step field of the RLDS schema
        treated as an observation here). Default: the embedding-input learner's ("embedding",
        "state").
      sampler_workers: threads sampling each table for the learner's batches (Reverb's
        `num_workers_per_iterator`; 4). The samples in flight (two batches' rows per table)
        are split among them, so more workers sample no further ahead of the actor; the
        learner's iterator gets 1.25-1.5x the batches/s of 1 worker (`tools/benchmark_replay.py`
        prints both). The agent sets it from `TrainConfig.replay_sampler_workers`
        (`--set train.replay_sampler_workers=N`).
    """

    demo_table: str = "demo"
    online_table: str = "online"
    max_size_demo: int = 1_000_000
    max_size_online: int = 200_000
    min_size_demo: int = 1
    min_size_online: int = 100
    samples_per_insert: float = 128.0
    error_buffer: float | tuple[float, float] | None = None
    observation_keys: tuple[str, ...] = ("embedding", "state")
    sampler_workers: int = 4

    def __post_init__(self):
        object.__setattr__(self, "observation_keys", tuple(self.observation_keys))
        if not self.observation_keys:
            raise ValueError("ReplayConfig.observation_keys is empty")
        if self.demo_table == self.online_table:
            raise ValueError(f"demo and online tables share the name {self.demo_table!r}")
        if self.sampler_workers < 1:
            raise ValueError(f"sampler_workers must be >= 1, got {self.sampler_workers}")
        if self.samples_per_insert <= 0:
            raise ValueError(f"samples_per_insert must be > 0, got {self.samples_per_insert}")

    @classmethod
    def for_training(cls, batch_size: int, online_fraction: float, updates_per_env_step: float = 1.0,
                     **overrides) -> "ReplayConfig":
        """samples_per_insert = batch_size x online_fraction x updates_per_env_step.

        Each learner update samples `round(batch_size * online_fraction)` online rows, so one
        inserted env step then pays for `updates_per_env_step` updates (the UTD ratio).
        """
        online_rows = mixed_online_rows(batch_size, online_fraction)
        if online_rows:
            overrides.setdefault("samples_per_insert", float(online_rows * updates_per_env_step))
        return cls(**overrides)

    def online_rate_limiter(self) -> reverb.rate_limiters.SampleToInsertRatio:
        spi = self.samples_per_insert
        error_buffer = self.error_buffer
        if error_buffer is None:
            offset = self.min_size_online * spi
            error_buffer = (offset - 2 * max(1.0, spi), offset + self.max_size_online * spi)
        return reverb.rate_limiters.SampleToInsertRatio(spi, self.min_size_online, error_buffer)


def mixed_online_rows(batch_size: int, online_fraction: float) -> int:
    """Online rows of a batch: round(batch_size * online_fraction)."""
    if not 0.0 <= online_fraction <= 1.0:
        raise ValueError(f"online_fraction must be in [0, 1], got {online_fraction}")
    return int(round(batch_size * online_fraction))


def observation_specs(spec: EpisodeSpec) -> dict[str, tf.TensorSpec]:
    """Every observation key a dataset with this spec offers, with its per-step spec."""
    specs = {f"image_{c}": tf.TensorSpec((h, w, 3), tf.uint8) for c, (h, w) in spec.cameras.items()}
    specs["state"] = tf.TensorSpec((spec.state_dim,), tf.float32)
    if spec.embedding_dim:
        specs["embedding"] = tf.TensorSpec((spec.embedding_dim,), tf.float32)
    return specs


def transition_signature(spec_like: EpisodeSpec | str | os.PathLike,
                         observation_keys: Sequence[str] = ReplayConfig.observation_keys) -> dict:
    """The nested tf.TensorSpec of one item (a transition), see the package docstring.

    Args:
      spec_like: an EpisodeSpec, or a converted dataset directory to read it from.
      observation_keys: which observation fields the item holds (`embedding` included).

    Raises:
      ValueError: naming the missing field (and the dataset directory) when a key is unknown.
    """
    where = ""
    if not isinstance(spec_like, EpisodeSpec):
        from vlarft.datasets.reader import dataset_spec

        where = f" in dataset {os.fspath(spec_like)}"
        spec_like = dataset_spec(spec_like)
    available = observation_specs(spec_like)
    missing = [k for k in observation_keys if k not in available]
    if missing:
        raise ValueError(f"observation field {missing[0]!r} is not available{where}; "
                         f"available: {sorted(available)}")
    observation = {k: available[k] for k in observation_keys}
    return {
        "observation": observation,
        "action": tf.TensorSpec((spec_like.action_dim,), tf.float32),
        "reward": tf.TensorSpec((), tf.float32),
        "discount": tf.TensorSpec((), tf.float32),
        "mc_return": tf.TensorSpec((), tf.float32),
        "intervention": tf.TensorSpec((), tf.bool),
        "next_observation": dict(observation),
    }


def make_tables(config: ReplayConfig, signature) -> list[reverb.Table]:
    """[demo, online]: both uniform-sampled FIFO rings; the online one rate-limited. Items of
    the transition `signature` are stored packed (`packing.py`)."""
    stored = StepLayout.of_signature(signature).stored_signature()

    def table(name, max_size, limiter):
        return reverb.Table(name=name, sampler=reverb.selectors.Uniform(),
                            remover=reverb.selectors.Fifo(), max_size=max_size,
                            rate_limiter=limiter, signature=stored)

    return [table(config.demo_table, config.max_size_demo,
                  reverb.rate_limiters.MinSize(config.min_size_demo)),
            table(config.online_table, config.max_size_online, config.online_rate_limiter())]


def check_table_signature(client: reverb.Client, table: str, signature) -> None:
    """Raises ValueError naming the table and the first differing field when the server's
    table does not take items of `signature`."""
    info = client.server_info(timeout=30)
    if table not in info:
        raise ValueError(f"server {client.server_address} has no table {table!r}; "
                         f"tables: {sorted(info)}")
    difference = signature_difference(transition_of_stored(info[table].signature), signature)
    if difference:
        path, have, want = difference
        raise ValueError(f"table {table!r} at {client.server_address} takes {path}: {have}, "
                         f"these items have {path}: {want}")


def signature_difference(have, want) -> tuple[str, str, str] | None:
    """(path, have, want) of the first field where two signatures differ ('absent' if missing)."""
    have, want = _flat_specs(have), _flat_specs(want)
    for path in sorted(set(have) | set(want)):
        if have.get(path) != want.get(path):
            return path, have.get(path, "absent"), want.get(path, "absent")
    return None


def _flat_specs(signature) -> dict[str, str]:
    return {"/".join(map(str, path)): f"{spec.dtype.name}{spec.shape.as_list()}"
            for path, spec in tree.flatten_with_path(signature or {})}


def _table_differences(have: TableInfo, want: TableInfo) -> Iterator[tuple[str, Any, Any]]:
    """(setting, have, want) for each setting a checkpoint restore must preserve."""
    packed = [layout_of_stored(info.signature) is not None for info in (have, want)]
    if packed[0] != packed[1]:
        yield "storage", *("packed steps" if p else "one tensor per field (before #11)" for p in packed)
    difference = signature_difference(transition_of_stored(have.signature),
                                      transition_of_stored(want.signature))
    if difference:
        yield f"signature field {difference[0]}", difference[1], difference[2]
    if have.max_size != want.max_size:
        yield "max_size", have.max_size, want.max_size
    if _limiter_settings(have) != _limiter_settings(want):
        yield ("rate limiter (samples_per_insert, min_size, min_diff, max_diff)",
               _limiter_settings(have), _limiter_settings(want))


def _limiter_settings(info: TableInfo) -> tuple:
    limiter = info.rate_limiter_info
    return limiter.samples_per_insert, limiter.min_size_to_sample, limiter.min_diff, limiter.max_diff


class ReplayServer:
    """A Reverb server hosting replay tables, optionally checkpointing to a directory.

    It listens on every interface (see the module docstring: Reverb 0.14 cannot bind loopback
    only); `address` is the loopback address for clients on this host. With `checkpoint_dir`,
    the newest checkpoint in that directory is restored at start and `checkpoint()` writes a new
    one there. Reverb restores a checkpointed table with its checkpointed signature, size and
    limiter whatever the new tables say, so a restore that differs from `tables` in any of these
    is refused (ReplayError naming the directory, table and setting).
    """

    def __init__(self, tables: Sequence[reverb.Table], *, port: int | None = None,
                 checkpoint_dir: str | os.PathLike | None = None):
        if port is not None:
            _check_port_free(port)
        self.checkpoint_dir = os.fspath(checkpoint_dir) if checkpoint_dir else None
        expected = {table.name: table.info for table in tables}
        checkpointer = None
        if self.checkpoint_dir:
            os.makedirs(self.checkpoint_dir, exist_ok=True)
            checkpointer = reverb.checkpointers.DefaultCheckpointer(self.checkpoint_dir)
        try:
            self._server = reverb.Server(list(tables), port=port, checkpointer=checkpointer)
        except (RuntimeError, ValueError) as e:
            restoring = f" restoring from {self.checkpoint_dir}" if self.checkpoint_dir else ""
            raise ReplayError(f"could not start a Reverb server on port {port}{restoring}: {e}") from e
        self.port = self._server.port
        self.address = f"localhost:{self.port}"
        self.table_names = tuple(expected)
        self._client = None
        if self.checkpoint_dir:
            self._check_restored(expected)

    def _check_restored(self, expected: dict[str, TableInfo]) -> None:
        restored = self.client.server_info(timeout=30)
        for name, want in expected.items():
            for setting, have, asked in _table_differences(restored[name], want):
                self.stop()
                raise ReplayError(
                    f"the checkpoint in {self.checkpoint_dir} holds table {name!r} with {setting} "
                    f"{have}, the new tables ask for {asked}; use the same ReplayConfig and "
                    f"signature, or another checkpoint_dir")

    @classmethod
    def from_config(cls, config: ReplayConfig, signature, **kwargs) -> "ReplayServer":
        return cls(make_tables(config, signature), **kwargs)

    @property
    def client(self) -> reverb.Client:
        if self._client is None:
            self._client = reverb.Client(self.address)
        return self._client

    def checkpoint(self) -> str:
        """Writes a checkpoint of every table into `checkpoint_dir`; returns its path."""
        if not self.checkpoint_dir:
            raise ReplayError("this ReplayServer has no checkpoint_dir; nothing to checkpoint into")
        return self.client.checkpoint()

    def wait(self) -> None:
        self._server.wait()

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> "ReplayServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def exposure_notice(port: int) -> str:
    """What a replay server on `port` exposes, and how to keep it off untrusted networks (printed
    when a server meant for other machines starts; WORKSPACE.md 'Threat model and guarantees')."""
    return (f"NOTE: replay port {port} is open on every network interface (Reverb cannot bind loopback only) and "
            f"has no access control: whoever reaches it can read, insert and delete replay data (actors refuse "
            f"parameters not signed with the run's secret; learners drop non-finite transitions). Keep it off "
            f"untrusted networks: allow only the actor machines in the firewall (e.g. `ufw allow from ACTOR_IP "
            f"to any port {port} proto tcp` then `ufw deny {port}/tcp`), or block it and let actors come "
            f"through SSH (on the actor: `ssh -N -L {port}:localhost:{port} USER@LEARNER_HOST`, then "
            f"--replay_address=localhost:{port}).")


def _check_port_free(port: int) -> None:
    """gRPC listens with SO_REUSEPORT, so a second server on a busy port would start silently
    and share the clients; refuse instead."""
    try:
        probe = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        host = "::"
    except OSError:
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        host = "0.0.0.0"
    with probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as e:
            reason = "already in use" if e.errno == errno.EADDRINUSE else e.strerror
            raise ReplayError(f"cannot serve replay on port {port}: {reason}") from e


def connect(address: str, timeout_s: float = 10.0) -> reverb.Client:
    """A client of the Reverb server at `address`, once it answers `server_info`.

    Retries until `timeout_s` (>= 1 s; Reverb's probe timeout has whole-second granularity)
    has passed, then raises ReplayError naming the address.
    """
    if timeout_s < 1:
        raise ValueError(f"timeout_s must be >= 1 second, got {timeout_s}")
    client = reverb.Client(address)
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while (remaining := deadline - time.monotonic()) >= 1:
        try:
            client.server_info(timeout=int(math.floor(remaining)))
            return client
        except (reverb.errors.DeadlineExceededError, RuntimeError) as e:
            last_error = e
            time.sleep(0.1)
    raise ReplayError(f"no Reverb server answered at {address} within {timeout_s:g} s "
                      f"(dead or unreachable): {last_error}")

"""Versioned actor parameters, learner -> actors, with the actors' durable replay watermarks.

`ReverbParameterStore` carries them through a one-item Reverb table (`PARAMS_TABLE`, newest item
only) on the replay server, so actors in the same process or on other machines fetch them the
same way. An item is the parameter leaves, then the learner step (`version`), the learner
process's random `incarnation` (a restarted learner has a new one, so actors adopt its parameters
even when its restored version is older than theirs), `durable`: per actor slot, how many of
that actor's steps are in the newest replay checkpoint (see `datasets/replay/reliable.py`), and
an HMAC-SHA256 over all of it.

Authentication. Anyone who reaches the replay port can insert into that table (Reverb has no
access control), so every publication is signed with the run's secret: the learner creates it
once in `<workdir>/params_secret` (mode 0600, reused when the run resumes) and remote actors are
given a copy (`--params_secret_file`). `latest()` raises `UntrustedPublication` for an item whose
MAC does not verify, whose leaves differ from the template in dtype or shape, or which holds
non-finite parameters; `Published.check_watermark` refuses a watermark beyond the steps the
actor ever wrote (the learner derives watermarks from progress tables, which anyone on the port
can also write). A replayed older publication of the same run still verifies: the actor then
acts with that run's older parameters and re-sends from the older watermark (duplicates, never
losses).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
import secrets
import stat
import struct
from pathlib import Path
from typing import Any

import jax
import numpy as np

PARAMS_TABLE = "params"
SECRET_FILE = "params_secret"
_SECRET_BYTES = 32


class UntrustedPublication(ValueError):
    """A publication in the params table that an actor must not use (see the module docstring)."""


def params_table():
    """The one-item table holding the newest published parameters."""
    import reverb

    return reverb.Table(name=PARAMS_TABLE, sampler=reverb.selectors.Lifo(), remover=reverb.selectors.Fifo(),
                        max_size=1, rate_limiter=reverb.rate_limiters.MinSize(1))


def learner_secret(workdir: str | os.PathLike) -> bytes:
    """The run's publication secret: `<workdir>/params_secret`, created (mode 0600) on first use."""
    path = Path(workdir) / SECRET_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_secret(path)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(_SECRET_BYTES) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return read_secret(path)


def read_secret(path: str | os.PathLike) -> bytes:
    """A publication secret file (64 hex digits), readable by its owner only; ValueError naming
    the file otherwise."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
        text = path.read_text().strip()
    except OSError as err:
        raise ValueError(f"parameter secret {path}: cannot read it ({err.strerror}); copy the learner's "
                         f"<workdir>/{SECRET_FILE} here") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ValueError(f"parameter secret {path} is accessible by other users (mode {stat.filemode(mode)}); "
                         f"run: chmod 600 {path}")
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        secret = b""
    if len(secret) != _SECRET_BYTES:
        raise ValueError(f"parameter secret {path} must hold {2 * _SECRET_BYTES} hex digits (the learner's "
                         f"<workdir>/{SECRET_FILE})")
    return secret


@dataclasses.dataclass(frozen=True)
class Published:
    """The newest published parameters (authenticated and finite)."""

    params: Any
    version: int
    incarnation: int
    durable: np.ndarray  # int64[max_actors]

    def durable_for(self, actor_index: int) -> int:
        return int(self.durable[actor_index])

    def check_watermark(self, actor_index: int, written: int) -> None:
        """Raises UntrustedPublication when the watermark of `actor_index` exceeds the `written`
        steps that actor ever sent: trimming the journal to it would lose undelivered steps."""
        if self.durable_for(actor_index) > written:
            raise UntrustedPublication(f"publication version {self.version} claims {self.durable_for(actor_index)} "
                                       f"durable steps of actor {actor_index}, which has written {written}")


def _mac(secret: bytes, leaves: list[np.ndarray], version: int, incarnation: int, durable: np.ndarray) -> bytes:
    digest = hmac.new(secret, digestmod=hashlib.sha256)
    for part in [np.int64(version), np.int64(incarnation), np.asarray(durable, np.int64), *leaves]:
        array = np.ascontiguousarray(part)
        header = f"{array.dtype.str}{array.shape}".encode()
        for chunk in (header, array.tobytes()):
            digest.update(struct.pack("<Q", len(chunk)))
            digest.update(chunk)
    return digest.digest()


class ReverbParameterStore:
    """Parameters in the replay server's `params` table; `template` gives their tree structure
    (and the dtype and shape of every leaf); `secret` signs and verifies publications.

    `client` may be replaced (an actor that reconnected). The learner sets `durable` before the
    publication that precedes each replay checkpoint.
    """

    def __init__(self, client, template: Any, max_actors: int = 8, *, secret: bytes):
        if len(secret) < 16:
            raise ValueError("the parameter secret must have at least 16 bytes")
        self.client = client
        leaves = jax.tree_util.tree_leaves(template)
        self.treedef = jax.tree_util.tree_structure(template)
        self.num_leaves = self.treedef.num_leaves
        self.leaf_specs = [(np.asarray(leaf).dtype, np.shape(leaf)) for leaf in leaves]
        self.incarnation = secrets.randbits(62)
        self.durable = np.zeros(max_actors, np.int64)
        self._secret = secret

    def publish(self, params: Any, version: int) -> None:
        """Signs and inserts `params` as `version`; ValueError (nothing sent) if any is not finite."""
        leaves = [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(jax.device_get(params))]
        if not all(np.all(np.isfinite(leaf)) for leaf in leaves if leaf.dtype.kind in "fc"):
            raise ValueError(f"refusing to publish non-finite parameters (version {version})")
        durable = self.durable.copy()
        mac = np.frombuffer(_mac(self._secret, leaves, version, self.incarnation, durable), np.uint8)
        self.client.insert(leaves + [np.int64(version), np.int64(self.incarnation), durable, mac.copy()],
                           {PARAMS_TABLE: 1.0})

    def latest(self) -> Published | None:
        """The newest publication, or None before the first; UntrustedPublication when it is not
        the learner's (bad or missing MAC), does not fit the template or is not finite."""
        if self.client.server_info(timeout=10)[PARAMS_TABLE].current_size == 0:
            return None
        data = list(next(iter(self.client.sample(PARAMS_TABLE, num_samples=1)))[0].data)
        if len(data) != self.num_leaves + 4:
            raise UntrustedPublication(f"the params item has {len(data)} fields, expected {self.num_leaves + 4}")
        leaves = [np.asarray(x) for x in data[:self.num_leaves]]
        version, incarnation, durable, mac = (np.asarray(x) for x in data[self.num_leaves:])
        for name, array, dtype, shape in (("version", version, np.int64, ()), ("incarnation", incarnation, np.int64, ()),
                                          ("watermarks", durable, np.int64, self.durable.shape),
                                          ("MAC", mac, np.uint8, (32,))):
            if array.dtype != dtype or array.shape != shape:
                raise UntrustedPublication(f"the params item's {name} is {array.dtype}{list(array.shape)}")
        expected = _mac(self._secret, leaves, int(version), int(incarnation), durable)
        if not hmac.compare_digest(mac.tobytes(), expected):
            raise UntrustedPublication(f"publication version {int(version)} is not signed with this run's "
                                       f"parameter secret: ignored")
        for index, (leaf, (dtype, shape)) in enumerate(zip(leaves, self.leaf_specs)):
            if leaf.dtype != dtype or leaf.shape != shape:
                raise UntrustedPublication(f"parameter {index} is {leaf.dtype}{list(leaf.shape)}, the policy "
                                           f"needs {dtype}{list(shape)}")
            if leaf.dtype.kind in "fc" and not np.all(np.isfinite(leaf)):
                raise UntrustedPublication(f"publication version {int(version)} holds non-finite parameters")
        if int(version) < 0 or np.any(durable < 0):
            raise UntrustedPublication(f"publication version {int(version)} has a negative version or watermark")
        return Published(jax.tree_util.tree_unflatten(self.treedef, leaves), int(version), int(incarnation), durable)

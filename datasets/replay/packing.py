"""How a transition is stored in Reverb: one float32 vector per step plus image columns.

Reverb's cost per sampled item grows with the number of tensors in it, so a step is not stored
field by field. `StepLayout` packs every float32/bool field of rank <= 1 (state, embedding,
action, reward, discount, mc_return, intervention as 0/1) into ONE float32 vector, in a fixed
order (observation keys sorted, then `STEP_FIELDS`); other observation fields (uint8 camera
images) stay columns of their own. An item references steps t and t+1 of these columns as
slices of length 2, so it holds 1 + cameras tensors:

    {"packed": float32[2, F], "columns": {key: [2, *shape]}}     (time index 0 = t, 1 = t+1)

`unpack` turns a sampled (batched) item back into the transition layout the learner reads
(`transition_signature`); it only slices, so it works on numpy arrays and TF tensors alike.
The layout travels with the table: it is written into the name of the `packed` TensorSpec of
the table signature, so a client that only knows the server (`layout_of_stored`) can unpack.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np
import tensorflow as tf

STEP_FIELDS = ("action", "reward", "discount", "mc_return", "intervention")  # stored besides the observation
LAYOUT_PREFIX = "vlarft-packed-v1"
_PACKABLE = (tf.float32, tf.bool)


@dataclasses.dataclass(frozen=True)
class StepLayout:
    """Which transition fields sit where in the packed vector, and which are columns.

    Attributes:
      packed: (path, width, dtype name) per packed field in vector order; path is
        "observation/<key>" or a step field name; width 0 = a scalar; dtype "float32" or "bool".
      columns: (observation key, shape, dtype name) per field stored as its own column.
    """

    packed: tuple[tuple[str, int, str], ...]
    columns: tuple[tuple[str, tuple[int, ...], str], ...]

    @classmethod
    def of_signature(cls, signature: Mapping) -> "StepLayout":
        """The layout of a transition signature (`transition_signature`)."""
        packed, columns = [], []
        for key, spec in sorted(signature["observation"].items()):
            if spec.dtype in _PACKABLE and spec.shape.rank <= 1:
                packed.append((f"observation/{key}", _width(spec), spec.dtype.name))
            else:
                columns.append((key, tuple(spec.shape.as_list()), spec.dtype.name))
        for name in STEP_FIELDS:
            spec = signature[name]
            if spec.dtype not in _PACKABLE or spec.shape.rank > 1:
                raise ValueError(f"step field {name!r} is {spec.dtype.name}{spec.shape.as_list()}: "
                                 f"only float32/bool scalars and vectors can be stored")
            packed.append((name, _width(spec), spec.dtype.name))
        return cls(tuple(packed), tuple(columns))

    @classmethod
    def of_name(cls, name: str) -> "StepLayout":
        """Inverse of `name`."""
        parts = name.split("|")
        if parts[0] != LAYOUT_PREFIX:
            raise ValueError(f"not a packed replay layout: {name!r}")
        packed, columns = [], []
        for part in parts[1:]:
            kind, path, dtype, shape = part.split(":")
            dims = tuple(int(d) for d in shape.split("x") if d)
            if kind == "p":
                packed.append((path, dims[0] if dims else 0, dtype))
            else:
                columns.append((path, dims, dtype))
        return cls(tuple(packed), tuple(columns))

    @property
    def name(self) -> str:
        """The layout as a TensorSpec name (stored with the table signature)."""
        parts = [f"p:{path}:{dtype}:{width or ''}" for path, width, dtype in self.packed]
        parts += [f"c:{key}:{dtype}:{'x'.join(map(str, shape))}" for key, shape, dtype in self.columns]
        return "|".join([LAYOUT_PREFIX, *parts])

    @property
    def width(self) -> int:
        """Floats per step in the packed vector."""
        return sum(max(1, width) for _, width, _ in self.packed)

    def stored_signature(self) -> dict:
        """The Reverb table signature of an item (two steps of every column)."""
        return {"packed": tf.TensorSpec((2, self.width), tf.float32, name=self.name),
                "columns": {key: tf.TensorSpec((2, *shape), tf.as_dtype(dtype))
                            for key, shape, dtype in self.columns}}

    def transition_signature(self) -> dict:
        """The transition signature this layout stores (inverse of `of_signature`)."""
        def spec(width, dtype):
            return tf.TensorSpec((width,) if width else (), tf.as_dtype(dtype))

        observation = {path[len("observation/"):]: spec(width, dtype) for path, width, dtype in self.packed
                       if path.startswith("observation/")}
        observation.update({key: tf.TensorSpec(shape, tf.as_dtype(dtype)) for key, shape, dtype in self.columns})
        observation = dict(sorted(observation.items()))
        signature = {"observation": observation}
        signature.update({path: spec(width, dtype) for path, width, dtype in self.packed if "/" not in path})
        signature["next_observation"] = dict(observation)
        return signature

    def pack_step(self, step: Mapping) -> dict:
        """A writer step ({"observation": {...}, STEP_FIELDS...}) -> {"packed", "columns"}."""
        parts = []
        for path, width, _ in self.packed:
            value = _at(step, path)
            parts.append(np.reshape(np.asarray(value, np.float32), (max(1, width),)))
        return {"packed": np.concatenate(parts),
                "columns": {key: np.asarray(step["observation"][key]) for key, _, _ in self.columns}}

    def unpack(self, item: Mapping) -> dict:
        """A stored item, batched or not (leading axes ..., then the 2 steps), -> the transition."""
        packed, out = item["packed"], {"observation": {}, "next_observation": {}}
        offset = 0
        for path, width, dtype in self.packed:
            size = max(1, width)
            now, then = (packed[..., t, offset] if not width else packed[..., t, offset:offset + size]
                         for t in (0, 1))
            if dtype == "bool":
                now, then = now != 0, then != 0
            offset += size
            if path.startswith("observation/"):
                key = path[len("observation/"):]
                out["observation"][key], out["next_observation"][key] = now, then
            else:
                out[path] = now
        for key, shape, _ in self.columns:
            column, rest = item["columns"][key], (slice(None),) * len(shape)
            out["observation"][key] = column[(Ellipsis, 0, *rest)]
            out["next_observation"][key] = column[(Ellipsis, 1, *rest)]
        return out


def layout_of_stored(signature: Mapping) -> StepLayout | None:
    """The layout of a stored table signature; None when it is not a packed one."""
    spec = signature.get("packed") if isinstance(signature, Mapping) else None
    if spec is None or not spec.name or not spec.name.startswith(LAYOUT_PREFIX):
        return None
    return StepLayout.of_name(spec.name)


def transition_of_stored(signature: Any) -> Any:
    """The transition signature a stored table signature holds (unchanged when not packed)."""
    layout = layout_of_stored(signature)
    return signature if layout is None else layout.transition_signature()


def _width(spec: tf.TensorSpec) -> int:
    return int(spec.shape[0]) if spec.shape.rank == 1 else 0


def _at(step: Mapping, path: str):
    if path.startswith("observation/"):
        return step["observation"][path[len("observation/"):]]
    return step[path]

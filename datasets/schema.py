"""The one RLDS episode schema shared by every stage: recording, conversion, replay, training.

An episode is a dict `{"steps": {...}, "episode_metadata": {...}}` whose steps are stored
column-wise (every leaf has the number of steps as its leading dimension):

  steps/observation/image_<camera>  uint8[T, H, W, 3]   (JPEG inside TFDS)
  steps/observation/state           float32[T, state_dim]
  steps/action                      float32[T, action_dim]  in [-1, 1]
  steps/reward                      float32[T]   reward for taking `action` in `observation`
  steps/discount                    float32[T]   0 on the transition into a true terminal
  steps/is_first, is_last           bool[T]      first / last step
  steps/is_terminal                 bool[T]      only on the last step, only on a true terminal
  steps/language_instruction        str[T]
  steps/intervention                bool[T]      the action came from a human
  steps/policy_version              int32[T]     learner version that acted, -1 = no policy
  steps/mc_return                   float32[T]   optional (EpisodeSpec.with_mc_return)
  steps/embedding                   float32[T, D] optional (EpisodeSpec.embedding_dim > 0)
  steps/language_embedding          float32[T, L] optional precomputed instruction embedding
                                    (Open X-Embodiment style; EpisodeSpec.language_embedding_dim > 0)

RLDS convention: step t holds o_t and the action a_t taken from it with its reward r_t; the last
step holds only the final observation (its action and reward are zero padding). A success ends
the episode with `is_terminal`; a time limit or an operator stop sets `is_last` alone, so a
learner bootstraps from the final observation.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping

import numpy as np

from vlarft.datasets.frames import FrameError, JpegFrames, image_feature

Episode = dict  # {"steps": {...}, "episode_metadata": {...}}, see the module docstring.

SOURCES = ("demo", "online", "intervention", "eval")

# name -> python type of every episode_metadata field.
METADATA_FIELDS: dict[str, type] = {
    "episode_id": str,  # unique and stable: conversion keys, splits and shards by it
    "task": str,  # task name, e.g. "pick_cube"
    "instruction": str,  # the language instruction of the episode
    "source": str,  # one of SOURCES
    "success": bool,  # the task was achieved
    "robot": str,  # robot name, e.g. "sim_gripper", "franka"
    "operator": str,  # who teleoperated ("scripted", a person's name, "" if none)
    "file_path": str,  # the raw file the episode came from
    "recorded_at": str,  # ISO 8601 UTC time the recording started
}


class SchemaError(ValueError):
    """An episode does not match the schema; names the episode, step and field."""

    def __init__(self, reason: str, *, episode_id: str = "?", step: int | None = None,
                 field: str | None = None):
        self.reason, self.episode_id, self.step, self.field = reason, episode_id, step, field
        where = [f"episode {episode_id!r}"]
        if step is not None:
            where.append(f"step {step}")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(f"{', '.join(where)}: {reason}")


@dataclasses.dataclass(frozen=True)
class EpisodeSpec:
    """Shapes of one dataset's episodes.

    Attributes:
      cameras: camera name -> (height, width); each gives `observation/image_<camera>`.
      state_dim: length of `observation/state` (19 for our robots, see robot_io.contract).
      action_dim: length of `action` (7: dx dy dz drx dry drz gripper).
      embedding_dim: when > 0, steps carry a cached backbone `embedding` of this width.
      with_mc_return: steps carry a Monte-Carlo return-to-go `mc_return`.
      language_embedding_dim: when > 0, steps carry a precomputed `language_embedding`.
    """

    cameras: Mapping[str, tuple[int, int]]
    state_dim: int = 19
    action_dim: int = 7
    embedding_dim: int = 0
    with_mc_return: bool = False
    language_embedding_dim: int = 0

    def __post_init__(self):
        cams = {str(k): (int(v[0]), int(v[1])) for k, v in sorted(dict(self.cameras).items())}
        if not cams:
            raise ValueError("an EpisodeSpec needs at least one camera")
        object.__setattr__(self, "cameras", cams)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "EpisodeSpec":
        return cls(**json.loads(text))

    @classmethod
    def from_robot_spec(cls, robot_spec: Any) -> "EpisodeSpec":
        """The episode spec of what a `robot_io.contract.RobotSpec` robot records."""
        return cls(cameras=robot_spec.cameras, state_dim=robot_spec.state_dim,
                   action_dim=robot_spec.action_dim)

    def step_fields(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """Flat step field path -> (per-step shape, dtype name)."""
        fields = {f"observation/image_{c}": ((h, w, 3), "uint8") for c, (h, w) in self.cameras.items()}
        fields.update({
            "observation/state": ((self.state_dim,), "float32"),
            "action": ((self.action_dim,), "float32"),
            "reward": ((), "float32"),
            "discount": ((), "float32"),
            "is_first": ((), "bool"),
            "is_last": ((), "bool"),
            "is_terminal": ((), "bool"),
            "language_instruction": ((), "str"),
            "intervention": ((), "bool"),
            "policy_version": ((), "int32"),
        })
        if self.with_mc_return:
            fields["mc_return"] = ((), "float32")
        if self.embedding_dim:
            fields["embedding"] = ((self.embedding_dim,), "float32")
        if self.language_embedding_dim:
            fields["language_embedding"] = ((self.language_embedding_dim,), "float32")
        return fields


def tfds_features(spec: EpisodeSpec):
    """The `tfds.features.FeaturesDict` of an RLDS dataset with this spec."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    def leaf(shape, dtype):
        if dtype == "str":
            return tfds.features.Text()
        if len(shape) == 3:
            return image_feature(shape)
        tf_dtype = {"float32": tf.float32, "bool": tf.bool, "int32": tf.int32}[dtype]
        return tfds.features.Scalar(dtype=tf_dtype) if not shape else tfds.features.Tensor(
            shape=shape, dtype=tf_dtype)

    steps = unflatten({path: leaf(*sd) for path, sd in spec.step_fields().items()})
    metadata = {name: tfds.features.Scalar(dtype=tf.bool) if t is bool else tfds.features.Text()
                for name, t in METADATA_FIELDS.items()}
    return tfds.features.FeaturesDict({"steps": tfds.features.Dataset(steps),
                                       "episode_metadata": metadata})


def flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": x}} -> {"a/b": x}."""
    flat = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, path + "/"))
        else:
            flat[path] = value
    return flat


def unflatten(flat: Mapping[str, Any]) -> dict:
    """{"a/b": x} -> {"a": {"b": x}}."""
    tree: dict = {}
    for path, value in flat.items():
        *parents, name = path.split("/")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[name] = value
    return tree


def num_steps(episode: Episode) -> int:
    return len(episode["steps"]["is_first"])


def validate_episode(episode: Episode, spec: EpisodeSpec) -> Episode:
    """Checks an episode against the schema and returns it with canonical dtypes.

    Float fields are cast to float32 and integer flags to bool when lossless; anything else
    that does not match raises `SchemaError` naming the episode, step and field.
    """
    if not isinstance(episode, Mapping) or "steps" not in episode or "episode_metadata" not in episode:
        raise SchemaError("an episode needs 'steps' and 'episode_metadata'")
    metadata = _validate_metadata(episode["episode_metadata"])
    eid = metadata["episode_id"]
    steps = flatten(episode["steps"])
    expected = spec.step_fields()
    missing = sorted(set(expected) - set(steps))
    if missing:
        raise SchemaError(f"missing step field(s) {missing}", episode_id=eid, field=missing[0])
    extra = sorted(set(steps) - set(expected))
    if extra:
        raise SchemaError(f"unexpected step field(s) {extra} for spec {spec.to_json()}",
                          episode_id=eid, field=extra[0])
    length = len(steps["is_first"])
    if length < 2:
        raise SchemaError(f"{length} step(s); an episode needs at least one transition",
                          episode_id=eid)
    out = {path: _canonical(steps[path], length, shape, dtype, eid, path)
           for path, (shape, dtype) in expected.items()}
    _validate_values(out, eid)
    return {"steps": unflatten(out), "episode_metadata": metadata}


def _validate_metadata(metadata: Mapping) -> dict:
    eid = str(metadata.get("episode_id", "?")) if isinstance(metadata, Mapping) else "?"
    out = {}
    for name, kind in METADATA_FIELDS.items():
        if name not in metadata:
            raise SchemaError("missing metadata field", episode_id=eid, field=f"episode_metadata/{name}")
        value = metadata[name]
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, bytes):
            value = value.decode()
        if not isinstance(value, kind):
            raise SchemaError(f"expected {kind.__name__}, got {type(value).__name__}",
                              episode_id=eid, field=f"episode_metadata/{name}")
        out[name] = value
    if not out["episode_id"]:
        raise SchemaError("empty episode_id", field="episode_metadata/episode_id")
    if out["source"] not in SOURCES:
        raise SchemaError(f"source {out['source']!r} is not one of {SOURCES}", episode_id=eid,
                          field="episode_metadata/source")
    return out


def _canonical(value, length, shape, dtype, eid, path) -> np.ndarray | JpegFrames:
    if isinstance(value, JpegFrames):  # frames the recorder already encoded: check the headers
        if value.shape != (length, *shape):
            raise SchemaError(f"expected {length} frames of {list(shape)}, got JPEG frames of {list(value.shape)}",
                              episode_id=eid, field=path)
        try:
            value.check()
        except FrameError as e:
            raise SchemaError(str(e), episode_id=eid, step=e.step, field=path) from None
        return value
    arr = np.asarray(value)
    if dtype == "str":
        arr = np.asarray([v.decode() if isinstance(v, bytes) else str(v) for v in arr.reshape(-1)],
                         dtype=object)
        if arr.shape != (length,):
            raise SchemaError(f"expected {length} strings, got shape {np.shape(value)}",
                              episode_id=eid, field=path)
        return arr
    if arr.shape != (length, *shape):
        bad_step = 0 if arr.ndim == 0 or arr.shape[0] == length else None
        raise SchemaError(f"expected {dtype}{list(shape)} per step x {length} steps, "
                          f"got array of shape {arr.shape}", episode_id=eid, step=bad_step, field=path)
    target = np.dtype(dtype)
    if arr.dtype == target:
        return arr
    lossless = (
        (target.kind == "f" and arr.dtype.kind in "fiub")
        or (target == np.int32 and arr.dtype.kind in "iu" and _fits(arr, np.int32))
        or (target == np.bool_ and arr.dtype.kind in "iu" and np.isin(arr, (0, 1)).all())
    )
    if not lossless:
        raise SchemaError(f"expected dtype {dtype}, got {arr.dtype}", episode_id=eid, field=path)
    return arr.astype(target)


def _fits(arr, dtype) -> bool:
    info = np.iinfo(dtype)
    return arr.size == 0 or (arr.min() >= info.min and arr.max() <= info.max)


def _first_bad(mask: np.ndarray) -> int:
    return int(np.argmax(mask.reshape(len(mask), -1).any(axis=1)))


def _validate_values(steps: dict[str, np.ndarray], eid: str) -> None:
    length = len(steps["is_first"])
    for path in ("observation/state", "action", "reward", "discount", "mc_return", "embedding", "language_embedding"):
        if path in steps and not np.isfinite(steps[path]).all():
            raise SchemaError("non-finite value", episode_id=eid,
                              step=_first_bad(~np.isfinite(steps[path])), field=path)
    out_of_box = np.abs(steps["action"]) > 1.0 + 1e-6
    if out_of_box.any():
        raise SchemaError("action outside [-1, 1]", episode_id=eid, step=_first_bad(out_of_box),
                          field="action")
    bad_discount = (steps["discount"] < 0) | (steps["discount"] > 1)
    if bad_discount.any():
        raise SchemaError("discount outside [0, 1]", episode_id=eid, step=_first_bad(bad_discount),
                          field="discount")
    expect_first = np.arange(length) == 0
    expect_last = np.arange(length) == length - 1
    for path, expect in (("is_first", expect_first), ("is_last", expect_last)):
        wrong = steps[path] != expect
        if wrong.any():
            raise SchemaError(f"{path} must be true exactly on step {0 if path == 'is_first' else length - 1}",
                              episode_id=eid, step=_first_bad(wrong), field=path)
    early_terminal = steps["is_terminal"] & ~expect_last
    if early_terminal.any():
        raise SchemaError("is_terminal set before the last step", episode_id=eid,
                          step=_first_bad(early_terminal), field="is_terminal")
    empty = np.asarray([not s for s in steps["language_instruction"]])
    if empty.any():
        raise SchemaError("empty language instruction", episode_id=eid, step=_first_bad(empty),
                          field="language_instruction")

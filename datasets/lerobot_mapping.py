"""Our RLDS episode schema <-> LeRobotDataset v3 frames: which field becomes which feature.

| our RLDS field                     | LeRobot                                   |
|------------------------------------|-------------------------------------------|
| steps/observation/image_<camera>   | `observation.images.<camera>` (video)     |
| steps/observation/state            | `observation.state` (float32, names)      |
| steps/action                       | `action` (float32, names)                 |
| steps/reward                       | `next.reward` (float32)                   |
| steps/language_instruction         | the frame's task (`task_index`, tasks.parquet) |
| steps/discount, is_first, is_last, is_terminal, intervention, policy_version, mc_return, embedding, language_embedding | extra features of the same names |
| episode_metadata/<name>            | meta/episodes column `vlarft/<name>`      |
| split of the episode               | info.json `splits` and meta/episodes `vlarft/split` |
| (step index)                       | `frame_index`, `timestamp` = frame_index / fps, `index`, `episode_index` |

A LeRobot dataset we did not write lacks the extra features; they are then derived: reward from
`next.reward` (else `reward`, else 0), `is_terminal` from `next.success` on the last frame (else
false: a time-limit end), `discount` 1 (0 on the transition into a terminal), `intervention`
false, `policy_version` -1, and the episode metadata from the dataset (episode id
`<dataset>_<episode index>`, instruction = the first frame's task, success = `next.success`
on any frame or the terminal). LeRobot features with no RLDS counterpart are reported as dropped.
Both directions keep the last frame's action and reward as they are (RLDS treats them as padding).
"""

from __future__ import annotations

import dataclasses
import io
import re
from typing import Mapping, Sequence

import numpy as np

from vlarft.datasets.lerobot_format import DEFAULT_FEATURES, VISUAL_DTYPES, LeRobotFormatError, LeRobotMeta
from vlarft.datasets.schema import METADATA_FIELDS, Episode, EpisodeSpec

CAMERA_PREFIX = "observation.images."
STATE, ACTION, REWARD = "observation.state", "action", "next.reward"
SUCCESS = "next.success"
# our step fields without a LeRobot meaning, kept as per-frame features of the same name
EXTRA_STEP_FIELDS = ("discount", "is_first", "is_last", "is_terminal", "intervention", "policy_version",
                     "mc_return", "embedding", "language_embedding")
METADATA_PREFIX = "vlarft/"
SPLIT_COLUMN = METADATA_PREFIX + "split"


@dataclasses.dataclass(frozen=True)
class ImportLayout:
    """Where our fields come from in one LeRobot dataset."""

    spec: EpisodeSpec
    cameras: dict[str, str]  # our camera name -> LeRobot feature key
    dropped: tuple[str, ...]  # LeRobot features with no RLDS counterpart


def names_or_default(names: Sequence[str] | None, size: int, prefix: str) -> list[str]:
    names = list(names or [])
    return names if len(names) == size else [f"{prefix}_{i}" for i in range(size)]


def lerobot_features(spec: EpisodeSpec, *, state_names: Sequence[str], action_names: Sequence[str],
                     video_info: Mapping[str, dict]) -> dict:
    """info.json `features` for episodes of `spec` (cameras as videos), defaults last."""
    features = {f"{CAMERA_PREFIX}{cam}": {"dtype": "video", "shape": [h, w, 3],
                                          "names": ["height", "width", "channels"], "info": video_info[cam]}
                for cam, (h, w) in spec.cameras.items()}
    features[STATE] = {"dtype": "float32", "shape": [spec.state_dim], "names": list(state_names)}
    features[ACTION] = {"dtype": "float32", "shape": [spec.action_dim], "names": list(action_names)}
    features[REWARD] = {"dtype": "float32", "shape": [1], "names": None}
    for field, (shape, dtype) in spec.step_fields().items():
        if field in EXTRA_STEP_FIELDS:
            features[field] = {"dtype": dtype, "shape": list(shape) or [1], "names": None}
    features.update({k: dict(v) for k, v in DEFAULT_FEATURES.items()})
    return features


def episode_columns(episode: Episode, fps: int) -> dict[str, np.ndarray]:
    """The per-frame columns of one of our episodes, without the dataset-wide `index`,
    `episode_index` and `task_index` (the writer numbers those)."""
    steps = episode["steps"]
    length = len(steps["is_first"])
    columns = {STATE: steps["observation"]["state"], ACTION: steps["action"], REWARD: steps["reward"]}
    columns.update({field: steps[field] for field in EXTRA_STEP_FIELDS if field in steps})
    columns["timestamp"] = (np.arange(length) / fps).astype(np.float32)
    columns["frame_index"] = np.arange(length, dtype=np.int64)
    return columns


def metadata_columns(metadata: Mapping, split: str) -> dict:
    """Our episode metadata as meta/episodes columns."""
    return {**{METADATA_PREFIX + k: metadata[k] for k in METADATA_FIELDS}, SPLIT_COLUMN: split}


def import_layout(meta: LeRobotMeta) -> ImportLayout:
    """The EpisodeSpec a LeRobot dataset converts to; LeRobotFormatError when it lacks a state
    or action vector."""
    features = meta.features
    for key in (STATE, ACTION):
        feature = features.get(key)
        if feature is None or len(feature["shape"]) != 1 or not np.issubdtype(np.dtype(feature["dtype"]), np.number):
            raise LeRobotFormatError(f"needs a numeric vector feature {key!r} (features: {sorted(features)})",
                                     dataset=meta.root, field=key)
    cameras = {}
    for key, feature in features.items():
        if feature["dtype"] in VISUAL_DTYPES and len(feature["shape"]) == 3:
            name = re.sub(r"[^a-z0-9_]", "_", key.removeprefix(CAMERA_PREFIX).removeprefix("observation.").lower())
            cameras[name] = key
    if not cameras:
        raise LeRobotFormatError("no camera (video or image feature of shape [H, W, 3])", dataset=meta.root,
                                 field="features")
    sizes = {name: _height_width(features[key]) for name, key in cameras.items()}
    vector = lambda name: int(features[name]["shape"][0]) if name in features else 0
    spec = EpisodeSpec(cameras=sizes, state_dim=vector(STATE), action_dim=vector(ACTION),
                       embedding_dim=vector("embedding"), with_mc_return="mc_return" in features,
                       language_embedding_dim=vector("language_embedding"))
    used = {STATE, ACTION, REWARD, "reward", *cameras.values(), *EXTRA_STEP_FIELDS, *DEFAULT_FEATURES}
    return ImportLayout(spec=spec, cameras=cameras, dropped=tuple(k for k in features if k not in used))


def _height_width(feature: Mapping) -> tuple[int, int]:
    shape, names = list(feature["shape"]), list(feature.get("names") or [])
    if names[:1] in (["channels"], ["channel"]):
        return shape[1], shape[2]
    return shape[0], shape[1]


def decode_image_column(values: np.ndarray) -> np.ndarray:
    """An `image` feature's cells (struct of PNG/JPEG bytes + path) -> uint8 [T, H, W, 3]."""
    from PIL import Image

    return np.stack([np.asarray(Image.open(io.BytesIO(cell["bytes"])).convert("RGB")) for cell in values])


def episode_from_frames(meta: LeRobotMeta, layout: ImportLayout, episode_index: int,
                        columns: Mapping[str, np.ndarray], images: Mapping[str, np.ndarray],
                        dataset_name: str) -> Episode:
    """One LeRobot episode (its data columns and decoded camera frames) as our episode
    (not yet validated)."""
    length = len(columns["frame_index"])
    position = np.arange(length)
    flag = lambda name, default: np.asarray(columns[name], bool) if name in columns else default
    reward = columns.get(REWARD, columns.get("reward", np.zeros(length)))
    success_column = flag(SUCCESS, None)
    terminal = flag("is_terminal", (position == length - 1) & (
        bool(success_column[-1]) if success_column is not None else False))
    discount = np.ones(length, np.float32)
    if terminal[-1]:
        discount[-2:] = 0.0
    steps = {
        "observation": {f"image_{cam}": images[cam] for cam in layout.cameras},
        "action": columns[ACTION], "reward": np.asarray(reward, np.float32),
        "discount": columns.get("discount", discount),
        "is_first": flag("is_first", position == 0), "is_last": flag("is_last", position == length - 1),
        "is_terminal": terminal,
        "language_instruction": np.asarray([meta.tasks[i] for i in columns["task_index"]], dtype=object),
        "intervention": flag("intervention", np.zeros(length, bool)),
        "policy_version": columns.get("policy_version", np.full(length, -1, np.int32)),
    }
    steps["observation"]["state"] = columns[STATE]
    for field in ("mc_return", "embedding", "language_embedding"):
        if field in columns:
            steps[field] = columns[field]
    row = meta.episodes[episode_index]
    success = bool(success_column.any()) if success_column is not None else bool(terminal[-1])
    defaults = {"episode_id": f"{dataset_name}_{episode_index:06d}", "task": dataset_name,
                "instruction": str(steps["language_instruction"][0]), "source": "demo", "success": success,
                "robot": meta.info.get("robot_type") or "unknown", "operator": "",
                "file_path": str(meta.data_file(row)), "recorded_at": ""}
    metadata = {k: row[METADATA_PREFIX + k] if row.get(METADATA_PREFIX + k) is not None else v
                for k, v in defaults.items()}
    return {"steps": steps, "episode_metadata": metadata}

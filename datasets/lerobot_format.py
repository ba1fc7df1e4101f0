"""The LeRobotDataset v3.0 on-disk format, as lerobot 0.6.1 writes and reads it, without lerobot.

    meta/info.json                          codebase_version "v3.0", fps, features, totals, paths
    meta/stats.json                         per feature: min max mean std count q01 q10 q50 q90 q99
    meta/tasks.parquet                      pandas frame: index `task` (str), column `task_index`
    meta/episodes/chunk-000/file-000.parquet  one row per episode: length, tasks, index range,
                                            data/video file and from/to timestamps, stats/<f>/<s>
    data/chunk-000/file-000.parquet         the frames of many episodes, one row group each
    videos/<key>/chunk-000/file-000.mp4     the frames of many episodes, one after another

This module knows the files (paths, parquet schemas, pandas/Hugging Face schema metadata, the
statistics and their merging rule) and checks what it reads; `lerobot_video.py` knows the MP4s and
`lerobot_mapping.py` how our RLDS fields map onto LeRobot features. Every problem is a
`LeRobotFormatError` naming the dataset, the episode and the field.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

CODEBASE_VERSION = "v3.0"
MATCHED_LEROBOT = "lerobot 0.6.1"  # the release whose writer/reader this module matches
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
CHUNKS_SIZE = 1000  # files per chunk directory
DATA_FILES_SIZE_IN_MB = 100
VIDEO_FILES_SIZE_IN_MB = 200
QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}
STAT_NAMES = ("min", "max", "mean", "std", "count", *QUANTILES)
# Present in every LeRobot dataset, after the user's features (lerobot/utils/constants.py).
DEFAULT_FEATURES = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}
VISUAL_DTYPES = ("video", "image")


class LeRobotFormatError(ValueError):
    """A LeRobot dataset does not match the v3.0 format; names the dataset, episode and field."""

    def __init__(self, reason: str, *, dataset: str, episode: int | None = None, field: str | None = None):
        self.reason, self.dataset, self.episode, self.field = reason, str(dataset), episode, field
        where = (f"LeRobot dataset {str(dataset)!r}", None if episode is None else f"episode {episode}",
                 None if field is None else f"field {field!r}")
        super().__init__(", ".join(w for w in where if w) + f": {reason}")


@dataclasses.dataclass(frozen=True)
class LeRobotMeta:
    """The metadata of one dataset on disk (picklable: Beam workers get a copy)."""

    root: str
    info: dict
    tasks: tuple[str, ...]  # task_index -> task text
    episodes: tuple[dict, ...]  # row i = episode i, without its stats/* columns

    @property
    def features(self) -> dict:
        return self.info["features"]

    @property
    def fps(self) -> int:
        return self.info["fps"]

    def video_keys(self) -> list[str]:
        return [k for k, f in self.features.items() if f["dtype"] == "video"]

    def data_file(self, episode: Mapping) -> Path:
        return Path(self.root) / self.info["data_path"].format(
            chunk_index=episode["data/chunk_index"], file_index=episode["data/file_index"])

    def video_file(self, episode: Mapping, key: str) -> Path:
        return Path(self.root) / self.info["video_path"].format(
            video_key=key, chunk_index=episode[f"videos/{key}/chunk_index"],
            file_index=episode[f"videos/{key}/file_index"])


# ----------------------------------------------------------------------------------- parquet types

def arrow_type(feature: Mapping, *, name: str = "?", dataset: str = "?") -> pa.DataType:
    """The parquet column type of a non-video feature, as Hugging Face `datasets` writes it."""
    dtype, shape = feature["dtype"], list(feature["shape"])
    if dtype == "image":
        return pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    if dtype == "string":
        return pa.string()
    try:
        scalar = pa.from_numpy_dtype(np.dtype(dtype))
    except TypeError:
        raise LeRobotFormatError(f"unknown dtype {dtype!r}", dataset=dataset, field=name) from None
    if shape == [1]:
        return scalar
    if len(shape) == 1:
        return pa.list_(pa.field("element", scalar), shape[0])
    raise LeRobotFormatError(f"shape {shape}: only scalars and vectors are written here", dataset=dataset,
                             field=name)


def _hf_feature_json(feature: Mapping) -> dict:
    dtype, shape = feature["dtype"], list(feature["shape"])
    if dtype == "image":
        return {"_type": "Image"}
    value = {"dtype": dtype, "_type": "Value"}
    return value if shape == [1] or dtype == "string" else {"feature": value, "length": shape[0], "_type": "List"}


def data_schema(features: Mapping[str, Mapping]) -> pa.Schema:
    """The schema of the data parquet files: one column per non-video feature, in feature order,
    with the Hugging Face `datasets` metadata lerobot's files carry."""
    columns = {k: f for k, f in features.items() if f["dtype"] != "video"}
    hf = {"info": {"features": {k: _hf_feature_json(f) for k, f in columns.items()}}}
    hf["fingerprint"] = hashlib.sha256(json.dumps(hf, sort_keys=True).encode()).hexdigest()[:16]
    fields = [pa.field(k, arrow_type(f, name=k)) for k, f in columns.items()]
    return pa.schema(fields, metadata={"huggingface": json.dumps(hf)})


def column_to_numpy(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A parquet column as a numpy array with the frames along the first axis."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if isinstance(column.type, pa.ExtensionType):  # Hugging Face's ArrayND: nested lists underneath
        column = column.storage
    if pa.types.is_fixed_size_list(column.type) and not pa.types.is_nested(column.type.value_type):
        return column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), column.type.list_size)
    if pa.types.is_nested(column.type) and not pa.types.is_struct(column.type):
        return np.asarray(column.to_pylist())
    return column.to_numpy(zero_copy_only=False)


# ------------------------------------------------------------------------------------- statistics

def feature_stats(values: np.ndarray, *, visual: bool = False) -> dict[str, np.ndarray]:
    """LeRobot statistics of one feature over the frames of an episode (exact quantiles).

    Vectors [N, D] give D-vectors, scalars [N] 1-vectors, images [N, H, W, 3] (uint8) shape
    (3, 1, 1) in [0, 1]."""
    values = np.asarray(values)
    if visual:
        axes, values = (0, 1, 2), values.astype(np.float64) / 255.0
        keep = lambda x: np.asarray(x).reshape(-1, 1, 1)
    else:
        values = values.astype(np.float64).reshape(len(values), -1)
        axes, keep = 0, np.asarray
    stats = {"min": keep(values.min(axes)), "max": keep(values.max(axes)), "mean": keep(values.mean(axes)),
             "std": keep(values.std(axes)), "count": np.asarray([len(values)])}
    for key, q in QUANTILES.items():
        stats[key] = keep(np.quantile(values, q, axis=axes))
    return stats


def aggregate_stats(per_episode: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Merges episode statistics the way lerobot does (`compute_stats.aggregate_feature_stats`):
    exact min/max/mean/std, quantiles as count-weighted means of the episodes' quantiles."""
    means = np.stack([np.asarray(s["mean"], np.float64) for s in per_episode])
    counts = np.asarray([int(np.asarray(s["count"]).reshape(-1)[0]) for s in per_episode], np.float64)
    weights = counts.reshape(-1, *([1] * (means.ndim - 1)))
    total = counts.sum()
    mean = (means * weights).sum(0) / total
    variances = np.stack([np.asarray(s["std"], np.float64) ** 2 for s in per_episode])
    out = {"min": np.min([s["min"] for s in per_episode], 0), "max": np.max([s["max"] for s in per_episode], 0),
           "mean": mean, "std": np.sqrt(((variances + (means - mean) ** 2) * weights).sum(0) / total),
           "count": np.asarray([int(total)])}
    for key in QUANTILES:
        out[key] = (np.stack([np.asarray(s[key], np.float64) for s in per_episode]) * weights).sum(0) / total
    return out


def stats_to_json(stats: Mapping[str, Mapping[str, np.ndarray]]) -> dict:
    return {feature: {k: np.asarray(v).tolist() for k, v in s.items()} for feature, s in stats.items()}


# ------------------------------------------------------------------------------------------ writing

def write_info(root: Path, info: Mapping) -> None:
    _write_text(root / INFO_PATH, json.dumps(info, indent=4, ensure_ascii=False))


def write_stats(root: Path, stats: Mapping) -> None:
    _write_text(root / STATS_PATH, json.dumps(stats, indent=4, ensure_ascii=False))


def write_tasks(root: Path, tasks: Sequence[str]) -> None:
    """meta/tasks.parquet as `DataFrame.to_parquet` writes it (lerobot looks tasks up by the index)."""
    import pandas as pd

    frame = pd.DataFrame({"task_index": np.arange(len(tasks), dtype=np.int64)},
                         index=pd.Index(list(tasks), name="task"))
    path = root / TASKS_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path)


def write_episodes(root: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """meta/episodes/chunk-000/file-000.parquet, one row per episode (rows in episode order)."""
    columns: dict[str, list] = {}
    for row in rows:
        for key in row:
            columns.setdefault(key, [])
    for row in rows:
        for key, values in columns.items():
            values.append(row.get(key))
    table = pa.table({k: pa.array(v, type=_episode_column_type(k, v)) for k, v in columns.items()})
    path = root / EPISODES_PATH.format(chunk_index=0, file_index=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="snappy")
    return path


def _episode_column_type(name: str, values: list) -> pa.DataType | None:
    if name == "tasks":
        return pa.list_(pa.field("element", pa.string()))
    if name.startswith("stats/"):
        if name.endswith("/count"):
            return pa.list_(pa.field("element", pa.int64()))
        depth = np.ndim(values[0])
        value = pa.float64()
        for _ in range(depth):
            value = pa.list_(pa.field("element", value))
        return value
    return None  # inferred: int64, float64, bool, string


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------ reading

def read_meta(root: str | os.PathLike) -> LeRobotMeta:
    """Reads and checks a dataset's metadata; anything that makes the dataset unreadable as a
    whole raises LeRobotFormatError (per-episode problems are found by `read_episode_table`)."""
    root = Path(root).absolute()
    name = str(root)
    info_path = root / INFO_PATH
    if not info_path.is_file():
        raise LeRobotFormatError(f"no {INFO_PATH}: not a LeRobot dataset directory", dataset=name)
    try:
        info = json.loads(info_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LeRobotFormatError(f"{INFO_PATH} is unreadable: {e}", dataset=name) from None
    version = str(info.get("codebase_version", ""))
    if not version.startswith("v3."):
        raise LeRobotFormatError(
            f"codebase_version {version!r}: this reader knows {CODEBASE_VERSION} (LeRobotDataset v3); convert "
            f"older datasets with lerobot's convert_dataset_v21_to_v30 first", dataset=name, field="codebase_version")
    for key in ("fps", "features", "data_path", "total_episodes", "total_frames"):
        if key not in info:
            raise LeRobotFormatError(f"{INFO_PATH} lacks {key!r}", dataset=name, field=key)
    if not isinstance(info["fps"], int) or info["fps"] <= 0:
        raise LeRobotFormatError(f"fps must be a positive integer, got {info['fps']!r}", dataset=name, field="fps")
    for key, feature in info["features"].items():
        if not isinstance(feature, Mapping) or "dtype" not in feature or "shape" not in feature:
            raise LeRobotFormatError("a feature needs 'dtype' and 'shape'", dataset=name, field=key)
    if any(f["dtype"] == "video" for f in info["features"].values()) and not info.get("video_path"):
        raise LeRobotFormatError("video features but no video_path", dataset=name, field="video_path")
    tasks = _read_tasks(root, name)
    episodes = _read_episode_rows(root, name)
    if len(episodes) != info["total_episodes"]:
        raise LeRobotFormatError(f"meta/episodes has {len(episodes)} rows, info.json total_episodes is "
                                 f"{info['total_episodes']}", dataset=name, field="total_episodes")
    if sum(e["length"] for e in episodes) != info["total_frames"]:
        raise LeRobotFormatError(f"episode lengths sum to {sum(e['length'] for e in episodes)}, info.json "
                                 f"total_frames is {info['total_frames']}", dataset=name, field="total_frames")
    return LeRobotMeta(root=name, info=info, tasks=tuple(tasks), episodes=tuple(episodes))


def _read_tasks(root: Path, name: str) -> list[str]:
    path = root / TASKS_PATH
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as e:
        raise LeRobotFormatError(f"{TASKS_PATH} is missing or unreadable: {e}", dataset=name,
                                 field="tasks") from None
    if "task" not in table.column_names or "task_index" not in table.column_names:
        raise LeRobotFormatError(f"{TASKS_PATH} needs columns 'task' (the pandas index) and 'task_index', has "
                                 f"{table.column_names}", dataset=name, field="tasks")
    by_index = dict(zip(table["task_index"].to_pylist(), table["task"].to_pylist()))
    if sorted(by_index) != list(range(len(by_index))) or len(by_index) != len(table):
        raise LeRobotFormatError(f"task_index values {sorted(by_index)} are not 0..{len(table) - 1}", dataset=name,
                                 field="task_index")
    return [by_index[i] for i in range(len(by_index))]


def _read_episode_rows(root: Path, name: str) -> list[dict]:
    files = sorted((root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
    if not files:
        raise LeRobotFormatError("no meta/episodes/chunk-*/file-*.parquet", dataset=name, field="episodes")
    rows = []
    for path in files:
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowInvalid) as e:
            raise LeRobotFormatError(f"{path} is unreadable: {e}", dataset=name, field="episodes") from None
        keep = [c for c in table.column_names if not c.startswith("stats/")]
        rows.extend(table.select(keep).to_pylist())
    for column in ("episode_index", "length", "data/chunk_index", "data/file_index", "dataset_from_index",
                   "dataset_to_index"):
        if any(column not in row for row in rows):
            raise LeRobotFormatError(f"meta/episodes lacks the column {column!r}", dataset=name, field=column)
    rows.sort(key=lambda r: r["episode_index"])
    if [r["episode_index"] for r in rows] != list(range(len(rows))):
        raise LeRobotFormatError("meta/episodes episode_index values are not 0..N-1", dataset=name,
                                 field="episode_index")
    return rows


def read_episode_table(meta: LeRobotMeta, episode_index: int) -> dict[str, np.ndarray]:
    """The data-parquet columns of one episode as numpy arrays (frames first), checked against
    info.json and meta/episodes: every declared non-video feature present with its declared
    shape, `episode_index`/`frame_index`/`index` consistent, `timestamp` = frame_index / fps."""
    row = meta.episodes[episode_index]
    fail = lambda reason, field=None: LeRobotFormatError(reason, dataset=meta.root, episode=episode_index,
                                                        field=field)
    path = meta.data_file(row)
    if not path.is_file():
        raise fail(f"data file {path} is missing", "data/file_index")
    try:
        table = pq.read_table(path, filters=[("episode_index", "=", episode_index)])
    except (OSError, pa.ArrowInvalid) as e:
        raise fail(f"data file {path} is unreadable: {e}", "data/file_index") from None
    columns = {}
    for key, feature in meta.features.items():
        if feature["dtype"] == "video":
            continue
        if key not in table.column_names:
            raise fail(f"declared in info.json but not a column of {path}", key)
        try:
            values = column_to_numpy(table[key])
        except (pa.ArrowException, ValueError, TypeError) as e:
            raise fail(f"cannot read the column of {path}: {e}", key) from None
        want = tuple(feature["shape"])
        got = values.shape[1:] if values.ndim > 1 else (1,)
        if feature["dtype"] not in ("string", "image") and got != want:
            raise fail(f"per-frame shape {list(got)} in {path}, info.json declares {list(want)}", key)
        columns[key] = values
    length = row["length"]
    if len(table) != length:
        raise fail(f"{len(table)} rows in {path}, meta/episodes says length {length}", "length")
    for key, want in (("frame_index", np.arange(length)),
                      ("index", np.arange(row["dataset_from_index"], row["dataset_to_index"]))):
        if key in columns and not np.array_equal(columns[key], want):
            raise fail(f"values {columns[key][:5].tolist()}... are not {want[:5].tolist()}...", key)
    if "timestamp" in columns:
        off = np.abs(columns["timestamp"].astype(np.float64) - np.arange(length) / meta.fps)
        if off.max(initial=0) > 1e-4 * max(1, length / meta.fps):
            frame = int(off.argmax())
            raise fail(f"frame {frame}: timestamp {columns['timestamp'][frame]} is not frame_index/fps "
                       f"= {frame / meta.fps}", "timestamp")
    return columns

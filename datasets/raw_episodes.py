"""The raw episode file: one `.npz` per episode, written atomically.

Layout of a raw file (format version 2):
  steps/<field path>            one array per schema step field, leading dimension = steps
                                (strings as numpy unicode arrays; no pickled objects)
  frames/<camera field>/jpeg    a camera's frames, JPEG-encoded by the dataset's own encoder
  frames/<camera field>/offsets (`datasets/frames.py`), concatenated, with T+1 byte offsets
  frames/<camera field>/frame_shape
  episode_metadata              0-d unicode array holding the metadata JSON
  spec                          0-d unicode array holding the EpisodeSpec JSON
  format_version                0-d int

Frames are encoded once, when recorded, with the encoder the RLDS writer uses, so the dataset
holds exactly those bytes: conversion neither decodes nor re-encodes them, and a frame read back
from the file (`read_raw_episode` decodes by default) equals `frames.as_stored` of the live frame,
which is what the dataset returns. `jpeg_frames=False` keeps lossless uint8 frames in `steps/`
instead (version 1 files, still read, are all like that). Not zlib-compressed: JPEG does not
compress further, and the remaining columns are small.

A file is first written as a hidden temporary beside its final name, flushed to disk, then
linked into place without ever replacing an existing file: a crash or Ctrl-C leaves either the
whole episode or nothing (a stale `.tmp-*` file at worst, which readers ignore).
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path

import numpy as np

from vlarft.datasets.frames import JpegFrames
from vlarft.datasets.schema import Episode, EpisodeSpec, flatten, unflatten

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
FRAMES = "frames/"
SUFFIX = ".npz"


class RawEpisodeError(ValueError):
    """A raw episode file cannot be read; names the file and the reason."""

    def __init__(self, path, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


def write_raw_episode(path: str | os.PathLike, episode: Episode, spec: EpisodeSpec, *,
                      jpeg_frames: bool = True) -> Path:
    """Writes `episode` to `path` atomically; refuses to overwrite an existing file. Camera
    frames are stored JPEG-encoded (the dataset's bytes) unless `jpeg_frames=False`."""
    path = Path(path)
    cameras = {f"observation/image_{c}" for c in spec.cameras}
    arrays = {}
    for key, value in flatten(episode["steps"]).items():
        if key in cameras and (jpeg_frames or isinstance(value, JpegFrames)):
            frames = value if isinstance(value, JpegFrames) else JpegFrames.encode(value)
            arrays.update({f"{FRAMES}{key}/{name}": col for name, col in frames.to_columns().items()})
        else:
            arrays[f"steps/{key}"] = value.decode() if isinstance(value, JpegFrames) else _to_numpy(value)
    arrays["episode_metadata"] = np.asarray(json.dumps(episode["episode_metadata"], sort_keys=True))
    arrays["spec"] = np.asarray(spec.to_json())
    arrays["format_version"] = np.asarray(FORMAT_VERSION)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)  # fails with FileExistsError rather than replacing a good episode
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_raw_episode(path: str | os.PathLike, *, decode_frames: bool = True) -> tuple[Episode, EpisodeSpec]:
    """Reads a raw episode file; raises RawEpisodeError naming the file for any damage. JPEG
    frames come back decoded (uint8 arrays, as the dataset would return them), or as
    `JpegFrames` with `decode_frames=False` (what the conversion job hands to the dataset)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            version = int(data["format_version"])
            if version not in READABLE_VERSIONS:
                raise RawEpisodeError(path, f"format version {version}, this reader knows {READABLE_VERSIONS}")
            spec = EpisodeSpec.from_json(str(data["spec"]))
            metadata = json.loads(str(data["episode_metadata"]))
            steps = {k[len("steps/"):]: data[k] for k in data.files if k.startswith("steps/")}
            for key in sorted({k[len(FRAMES):].rsplit("/", 1)[0] for k in data.files if k.startswith(FRAMES)}):
                columns = {name: data[f"{FRAMES}{key}/{name}"] for name in ("jpeg", "offsets", "frame_shape")}
                frames = JpegFrames.from_columns(**columns)
                steps[key] = frames.decode() if decode_frames else frames
    except RawEpisodeError:
        raise
    except FileNotFoundError:
        raise RawEpisodeError(path, "no such file") from None
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        raise RawEpisodeError(path, f"truncated or not an episode file ({type(e).__name__}: {e})") from None
    except KeyError as e:
        raise RawEpisodeError(path, f"missing entry {e}") from None
    except (ValueError, TypeError) as e:
        raise RawEpisodeError(path, f"unreadable content ({type(e).__name__}: {e})") from None
    if "language_instruction" in steps:
        steps["language_instruction"] = steps["language_instruction"].astype(object)
    return {"steps": unflatten(steps), "episode_metadata": metadata}, spec


def list_raw_episodes(directory: str | os.PathLike) -> list[Path]:
    """Raw episode files of a directory, sorted by name (temporaries excluded)."""
    return sorted(p for p in Path(directory).glob(f"*{SUFFIX}") if not p.name.startswith("."))


def next_episode_path(directory: str | os.PathLike, prefix: str) -> Path:
    """`<prefix>_<n>.npz` with n one past the highest already in `directory`."""
    pattern = re.compile(rf"^{re.escape(prefix)}_(\d+){re.escape(SUFFIX)}$")
    taken = [int(m.group(1)) for p in Path(directory).iterdir() if (m := pattern.match(p.name))]
    return Path(directory) / f"{prefix}_{max(taken, default=-1) + 1:06d}{SUFFIX}"


def _to_numpy(value) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype == object:  # strings
        arr = np.asarray([v.decode() if isinstance(v, bytes) else str(v) for v in arr.reshape(-1)])
    return arr


def recorded_transitions(directory: str | os.PathLike) -> int:
    """Real transitions in all raw episode files of a directory (reads only one small column)."""
    total = 0
    for path in list_raw_episodes(directory):
        with np.load(path, allow_pickle=False) as data:
            total += len(data["steps/is_first"]) - 1
    return total

"""Small TFDS/RLDS datasets written on disk with the exact feature specs of public layouts (real
TFRecord shards + TFDS metadata, opened with tfds.builder_from_directory), for the mapping tests.

  * `example_layout_features`: kpertsch/rlds_dataset_builder's example_dataset builder.
  * `bridge_features`: the Open X-Embodiment `bridge` dataset as published in the TFDS catalog
    (tfds.robotics.rtx.Bridge 0.1.0).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds


def example_layout_features():
    image = lambda: tfds.features.Image(shape=(64, 64, 3), dtype=np.uint8, encoding_format="png")
    return tfds.features.FeaturesDict({
        "steps": tfds.features.Dataset({
            "observation": tfds.features.FeaturesDict({
                "image": image(),
                "wrist_image": image(),
                "state": tfds.features.Tensor(shape=(10,), dtype=np.float32),
            }),
            "action": tfds.features.Tensor(shape=(10,), dtype=np.float32),
            "discount": tfds.features.Scalar(dtype=np.float32),
            "reward": tfds.features.Scalar(dtype=np.float32),
            "is_first": tfds.features.Scalar(dtype=np.bool_),
            "is_last": tfds.features.Scalar(dtype=np.bool_),
            "is_terminal": tfds.features.Scalar(dtype=np.bool_),
            "language_instruction": tfds.features.Text(),
            "language_embedding": tfds.features.Tensor(shape=(512,), dtype=np.float32),
        }),
        "episode_metadata": tfds.features.FeaturesDict({"file_path": tfds.features.Text()}),
    })


def bridge_features():
    image = lambda: tfds.features.Image(shape=(256, 256, 3), dtype=np.uint8, encoding_format="jpeg")
    flag = lambda: tfds.features.Scalar(dtype=np.bool_)
    return tfds.features.FeaturesDict({
        "episode_metadata": tfds.features.FeaturesDict({
            "episode_id": tfds.features.Scalar(dtype=np.int32),
            "file_path": tfds.features.Tensor(shape=(), dtype=tf.string),
            "has_image_0": flag(), "has_image_1": flag(), "has_image_2": flag(), "has_image_3": flag(),
            "has_language": flag(),
        }),
        "steps": tfds.features.Dataset({
            "action": tfds.features.Tensor(shape=(7,), dtype=np.float32),
            "discount": tfds.features.Scalar(dtype=np.float32),
            "is_first": tfds.features.Tensor(shape=(), dtype=np.bool_),
            "is_last": tfds.features.Tensor(shape=(), dtype=np.bool_),
            "is_terminal": tfds.features.Tensor(shape=(), dtype=np.bool_),
            "language_embedding": tfds.features.Tensor(shape=(512,), dtype=np.float32),
            "language_instruction": tfds.features.Tensor(shape=(), dtype=tf.string),
            "observation": tfds.features.FeaturesDict({
                "image_0": image(), "image_1": image(), "image_2": image(), "image_3": image(),
                "state": tfds.features.Tensor(shape=(7,), dtype=np.float32),
            }),
            "reward": tfds.features.Scalar(dtype=np.float32),
        }),
    })


def write_tfds_dataset(directory: Path, name: str, features, splits: Mapping[str, Sequence[dict]]) -> str:
    """Writes one shard per split of the given episodes and the TFDS metadata; returns the directory."""
    directory.mkdir(parents=True, exist_ok=True)
    split_infos = []
    for split, episodes in splits.items():
        path = directory / f"{name}-{split}.tfrecord-00000-of-00001"
        with tf.io.TFRecordWriter(str(path)) as writer:
            for episode in episodes:
                writer.write(features.serialize_example(episode))
        split_infos.append(tfds.core.SplitInfo(name=split, shard_lengths=[len(episodes)],
                                               num_bytes=path.stat().st_size))
    tfds.folder_dataset.write_metadata(data_dir=str(directory), features=features, split_infos=split_infos,
                                       filename_template=None, check_data=False)
    return str(directory)


def two_colour_frames(length: int, size: int, seed: int) -> np.ndarray:
    """[T, size, size, 3] frames: left half one colour, right half another, changing per step (flat
    regions: PNG keeps them exactly, JPEG within a grey level or two)."""
    rng = np.random.default_rng(seed)
    frames = np.zeros((length, size, size, 3), np.uint8)
    for t in range(length):
        frames[t, :, : size // 2] = rng.integers(30, 220, 3)
        frames[t, :, size // 2:] = rng.integers(30, 220, 3)
    return frames


def example_layout_episode(index: int, length: int, *, success: bool = True) -> dict:
    """A hand-made episode in the rlds_dataset_builder example layout (values chosen to check the mapping)."""
    t = np.arange(length, dtype=np.float32)[:, None]
    state = (index * 100 + t * 10 + np.arange(10)).astype(np.float32)
    action = np.tile(np.linspace(-1.5, 1.5, 10, dtype=np.float32), (length, 1)) * (1 + 0.1 * t)
    action[:, 7] = np.where(np.arange(length) % 2 == 0, 0.3, -0.2)  # finger velocity: opening, closing
    last = np.arange(length) == length - 1
    return {
        "steps": {
            "observation": {"image": two_colour_frames(length, 64, seed=index),
                            "wrist_image": two_colour_frames(length, 64, seed=100 + index), "state": state},
            "action": action.astype(np.float32),
            "discount": np.ones(length, np.float32),
            "reward": (last & success).astype(np.float32),
            "is_first": np.arange(length) == 0,
            "is_last": last,
            "is_terminal": last & success,
            "language_instruction": [f"open the door {index}"] * length,
            "language_embedding": np.tile(np.full(512, index / 10, np.float32), (length, 1)),
        },
        "episode_metadata": {"file_path": f"/raw/episode_{index}.npy"},
    }


def bridge_episode(index: int, length: int, *, instruction: str = "put the spoon in the pot") -> dict:
    """A hand-made episode in the bridge layout."""
    rng = np.random.default_rng(index)
    action = np.zeros((length, 7), np.float32)
    action[:, :3] = rng.uniform(-0.04, 0.04, (length, 3))
    action[:, 3:6] = rng.uniform(-0.2, 0.2, (length, 3))
    action[0, 0] = 0.08  # beyond 0.05 m: clipped to 1 by the shipped mapping
    action[:, 6] = np.where(np.arange(length) < length // 2, 1.0, 0.2)  # open, then (nearly) closed
    frames = two_colour_frames(length, 256, seed=index)
    blank = np.zeros_like(frames)
    return {
        "episode_metadata": {"episode_id": index, "file_path": f"/bridge/raw/traj{index}",
                             "has_image_0": True, "has_image_1": False, "has_image_2": False, "has_image_3": False,
                             "has_language": bool(instruction)},
        "steps": {
            "action": action,
            "discount": np.ones(length, np.float32),
            "is_first": np.arange(length) == 0,
            "is_last": np.arange(length) == length - 1,
            "is_terminal": np.zeros(length, bool),
            "language_embedding": np.tile(rng.normal(size=512).astype(np.float32), (length, 1)),
            "language_instruction": [instruction] * length,
            "observation": {"image_0": frames, "image_1": blank, "image_2": blank, "image_3": blank,
                            "state": rng.normal(size=(length, 7)).astype(np.float32)},
            "reward": (np.arange(length) == length - 1).astype(np.float32),
        },
    }


def write_example_source(directory: Path) -> str:
    """The example layout: train 3 episodes (the second one a failure: no terminal, no reward), val 1."""
    episodes = {"train": [example_layout_episode(i, 4 + i, success=i != 1) for i in range(3)],
                "val": [example_layout_episode(3, 3)]}
    return write_tfds_dataset(directory, "example_dataset", example_layout_features(), episodes)


def write_bridge_source(directory: Path) -> str:
    """The bridge layout: train = a good episode, one without language, one with a NaN state at step 2;
    test = one good episode."""
    nan_state = bridge_episode(2, 4)
    nan_state["steps"]["observation"]["state"][2, 1] = np.nan
    episodes = {"train": [bridge_episode(0, 5), bridge_episode(1, 3, instruction=""), nan_state],
                "test": [bridge_episode(3, 3, instruction="wipe the table")]}
    return write_tfds_dataset(directory, "bridge", bridge_features(), episodes)

"""Reads a converted RLDS dataset back as numpy episodes in the schema's column layout."""

from __future__ import annotations

import os
from typing import Iterator

import numpy as np

from vlarft.datasets.schema import METADATA_FIELDS, Episode, EpisodeSpec, SchemaError


def open_dataset(dataset_dir: str | os.PathLike):
    """The TFDS builder of a dataset directory, with a clear error when it is not one."""
    import tensorflow_datasets as tfds

    if not os.path.exists(os.path.join(dataset_dir, "dataset_info.json")):
        raise FileNotFoundError(f"{dataset_dir}: not a TFDS dataset directory (no dataset_info.json)")
    return tfds.builder_from_directory(os.fspath(dataset_dir))


def dataset_spec(dataset_dir: str | os.PathLike) -> EpisodeSpec:
    """The EpisodeSpec of a converted dataset, read from its TFDS features."""
    steps = open_dataset(dataset_dir).info.features["steps"].feature
    observation = steps["observation"]
    missing = [f for f in ("action", "reward", "is_last", "is_terminal") if f not in steps]
    if "state" not in observation:
        missing.append("observation/state")
    if missing:
        raise SchemaError(f"dataset lacks step field(s) {missing}", episode_id=str(dataset_dir),
                          field=missing[0])
    cameras = {key[len("image_"):]: tuple(observation[key].shape[:2])
               for key in observation.keys() if key.startswith("image_")}
    return EpisodeSpec(cameras=cameras, state_dim=observation["state"].shape[0],
                       action_dim=steps["action"].shape[0],
                       embedding_dim=steps["embedding"].shape[0] if "embedding" in steps else 0,
                       with_mc_return="mc_return" in steps,
                       language_embedding_dim=steps["language_embedding"].shape[0] if "language_embedding" in steps else 0)


def iterate_episodes(dataset_dir: str | os.PathLike, split: str = "train") -> Iterator[Episode]:
    """Episodes of one split, in file order, each with its steps stacked as numpy arrays."""
    import tensorflow as tf

    for episode in open_dataset(dataset_dir).as_dataset(split=split, shuffle_files=False):
        steps = episode["steps"].batch(1 << 20).get_single_element()
        steps = tf.nest.map_structure(lambda t: t.numpy(), steps)
        steps["language_instruction"] = np.asarray([s.decode() for s in steps["language_instruction"]],
                                                   dtype=object)
        metadata = {}
        for name, kind in METADATA_FIELDS.items():
            value = episode["episode_metadata"][name].numpy()
            metadata[name] = value.decode() if kind is str else kind(value)
        yield {"steps": steps, "episode_metadata": metadata}

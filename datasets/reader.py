"""The one reader of converted RLDS datasets: tf.data pipelines built with the `rlds` library.

Every stage reads a dataset through this module (the replay loader, the embedding job, SFT's
in-memory and streaming loaders, the offline stage's arrays):

    episode_dataset(dir, split)       tf.data of RLDS episodes (TFDS files, optionally shuffled)
      |-- iterate_episodes            each episode's steps stacked as numpy columns
      |-- transition_dataset          steps -> transitions: rlds.transformations.batch(size=2, shift=1)
      |-- window_dataset              steps -> W-frame backbone windows: rlds batch(size=W, shift=1)
      |                               over the steps with W-1 masked copies of the first in front
      `-- episode_lengths, action_state_mean_std   rlds.transformations.episode_length / mean_and_std

Semantics the library does not fix and our schema does (`datasets/schema.py`): step t holds o_t,
a_t, r_t; the last step (`rlds.IS_LAST`) holds only the final observation, so an episode of T+1
steps has T transitions, the last one's `next_observation` is the final observation, and
`rlds.IS_TERMINAL` on that last step tells a true end (no bootstrap) from a time limit. A window
ending at step t has frames t-W+1..t; frames before the episode's start are copies of its first
frame with `timestep_mask` False (what the actor's frame history feeds the backbone).

Field names come from the `rlds` constants (`rlds.STEPS`, `rlds.OBSERVATION`, `rlds.ACTION`, ...);
our own fields (`intervention`, `language_instruction`, `embedding`, ...) are named in the schema.
"""

from __future__ import annotations

import os
from typing import Iterator, Sequence

import numpy as np
import rlds
import tensorflow as tf
import tensorflow_datasets as tfds

from vlarft.datasets.schema import METADATA_FIELDS, Episode, EpisodeSpec, SchemaError

# Fields of a step that describe its transition (o_t, a_t -> r_t, o_{t+1}), besides observations.
TRANSITION_FIELDS = (rlds.ACTION, rlds.REWARD, rlds.DISCOUNT, "intervention")


def open_dataset(dataset_dir: str | os.PathLike):
    """The TFDS builder of a dataset directory, with a clear error when it is not one."""
    if not os.path.exists(os.path.join(dataset_dir, "dataset_info.json")):
        raise FileNotFoundError(f"{dataset_dir}: not a TFDS dataset directory (no dataset_info.json)")
    return tfds.builder_from_directory(os.fspath(dataset_dir))


def dataset_spec(dataset_dir: str | os.PathLike) -> EpisodeSpec:
    """The EpisodeSpec of a converted dataset, read from its TFDS features."""
    steps = open_dataset(dataset_dir).info.features[rlds.STEPS].feature
    observation = steps[rlds.OBSERVATION]
    missing = [f for f in (rlds.ACTION, rlds.REWARD, rlds.IS_LAST, rlds.IS_TERMINAL) if f not in steps]
    if "state" not in observation:
        missing.append(f"{rlds.OBSERVATION}/state")
    if missing:
        raise SchemaError(f"dataset lacks step field(s) {missing}", episode_id=str(dataset_dir),
                          field=missing[0])
    cameras = {key[len("image_"):]: tuple(observation[key].shape[:2])
               for key in observation.keys() if key.startswith("image_")}
    return EpisodeSpec(cameras=cameras, state_dim=observation["state"].shape[0],
                       action_dim=steps[rlds.ACTION].shape[0],
                       embedding_dim=steps["embedding"].shape[0] if "embedding" in steps else 0,
                       with_mc_return="mc_return" in steps,
                       language_embedding_dim=steps["language_embedding"].shape[0] if "language_embedding" in steps else 0)


def split_names(dataset_dir: str | os.PathLike) -> list[str]:
    return list(open_dataset(dataset_dir).info.splits)


def episode_dataset(dataset_dir: str | os.PathLike, split: str = "train", *, shuffle_files: bool = False,
                    seed: int | None = None, parallel_files: int = 4) -> tf.data.Dataset:
    """The split's RLDS episodes ({rlds.STEPS: dataset of steps, "episode_metadata": ...}).

    In file order unless `shuffle_files` (then the file order and the interleaving of
    `parallel_files` files at a time are drawn from `seed`). Steps are decoded lazily, so an
    episode costs memory only while its steps are being read.
    """
    read_config = tfds.ReadConfig(shuffle_seed=seed, interleave_cycle_length=parallel_files,
                                  add_tfds_id=False)
    return open_dataset(dataset_dir).as_dataset(split=split, shuffle_files=shuffle_files, read_config=read_config)


def episode_to_numpy(episode) -> Episode:
    """One episode of `episode_dataset` with its steps stacked as numpy columns (strings decoded)."""
    steps = episode[rlds.STEPS].batch(1 << 20).get_single_element()
    steps = tf.nest.map_structure(lambda t: t.numpy(), steps)
    steps["language_instruction"] = np.asarray([s.decode() for s in steps["language_instruction"]], dtype=object)
    metadata = {}
    for name, kind in METADATA_FIELDS.items():
        value = episode["episode_metadata"][name].numpy()
        metadata[name] = value.decode() if kind is str else kind(value)
    return {"steps": steps, "episode_metadata": metadata}


def iterate_episodes(dataset_dir: str | os.PathLike, split: str = "train") -> Iterator[Episode]:
    """Episodes of one split, in file order, each with its steps stacked as numpy arrays."""
    for episode in episode_dataset(dataset_dir, split):
        yield episode_to_numpy(episode)


def episode_lengths(dataset_dir: str | os.PathLike, split: str = "train") -> np.ndarray:
    """int64[episodes]: steps per episode (final observation included), in file order, counted
    with `rlds.transformations.episode_length` without stacking the episodes."""
    lengths = episode_dataset(dataset_dir, split).map(
        lambda episode: rlds.transformations.episode_length(episode[rlds.STEPS]))
    return np.fromiter(lengths.as_numpy_iterator(), np.int64)


# ---------------------------------------------------------------- steps -> transitions, windows


def transition_dataset(steps: tf.data.Dataset, observation_keys: Sequence[str] | None = None) -> tf.data.Dataset:
    """One episode's steps -> its T transitions, with `rlds.transformations.batch(size=2, shift=1)`.

    Each transition: {"observation": o_t, "next_observation": o_{t+1}, action, reward, discount,
    intervention (of step t), "terminal": the episode ended in a true terminal at t+1,
    "mc_return" when the steps carry it}. `observation_keys` picks observation fields (the
    cached `embedding` step field counts as one); default: all of them.
    """
    pairs = rlds.transformations.batch(steps, size=2, shift=1, drop_remainder=True)

    def to_transition(pair):
        observation = _observation_fields(pair, observation_keys)
        out = {name: pair[name][0] for name in TRANSITION_FIELDS}
        if "mc_return" in pair:
            out["mc_return"] = pair["mc_return"][0]
        out["observation"] = {key: value[0] for key, value in observation.items()}
        out["next_observation"] = {key: value[1] for key, value in observation.items()}
        out["terminal"] = tf.logical_and(pair[rlds.IS_LAST][1], pair[rlds.IS_TERMINAL][1])
        return out

    return pairs.map(to_transition)


def window_dataset(steps: tf.data.Dataset, window: int, observation_keys: Sequence[str] | None = None,
                   step_keys: Sequence[str] = (rlds.ACTION, rlds.IS_LAST, "language_instruction")) -> tf.data.Dataset:
    """One episode's steps -> every step's W-frame window, with `rlds.transformations.batch(size=W,
    shift=1)` over the steps preceded by W-1 copies of the first (masked padding).

    Each window: {"observation": {key: [W, ...]}, "timestep_mask": bool[W]} plus the `step_keys`
    fields of the window's last step (the step whose action the window predicts).
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")

    def frame(step, real):
        out = {"observation": _observation_fields(step, observation_keys), "timestep_mask": real}
        out.update({key: step[key] for key in step_keys if key in step})
        return out

    padding = steps.take(1).repeat(window - 1).map(lambda step: frame(step, tf.constant(False)))
    frames = padding.concatenate(steps.map(lambda step: frame(step, tf.constant(True))))
    windows = rlds.transformations.batch(frames, size=window, shift=1, drop_remainder=True)

    def last_step_fields(w):
        out = {"observation": w["observation"], "timestep_mask": w["timestep_mask"]}
        out.update({key: w[key][-1] for key in step_keys if key in w})
        return out

    return windows.map(last_step_fields)


def _observation_fields(step, keys: Sequence[str] | None) -> dict:
    observation = dict(step[rlds.OBSERVATION])
    if "embedding" in step:
        observation["embedding"] = step["embedding"]
    if keys is None:
        return observation
    missing = [key for key in keys if key not in observation]
    if missing:
        raise KeyError(f"steps have no observation field(s) {missing} (have {sorted(observation)})")
    return {key: observation[key] for key in keys}


# ---------------------------------------------------------------- statistics through rlds


def action_state_mean_std(dataset_dir: str | os.PathLike, split: str = "train") -> dict[str, dict[str, np.ndarray]]:
    """{"action"|"state": {"mean", "std"}} of a split with `rlds.transformations.mean_and_std`:
    actions over real transitions (the last step's padding action masked out), states over every
    step, as `datasets/statistics.py` defines them (which also keeps exact percentiles, which the
    library does not compute)."""
    def fields(step):
        return ({"action": tf.cast(step[rlds.ACTION], tf.float64),
                 "state": tf.cast(step[rlds.OBSERVATION]["state"], tf.float64)},
                {"action": tf.logical_not(step[rlds.IS_LAST]), "state": tf.constant(True)})

    mean, std = rlds.transformations.mean_and_std(episode_dataset(dataset_dir, split), fields)
    return {key: {"mean": np.asarray(mean[key]), "std": np.asarray(std[key])} for key in ("action", "state")}

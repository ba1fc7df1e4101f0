"""Reads demos in the HIL-SERL / ConRFT pickle format into schema episodes.

That format is a pickled list of transition dicts with `observations`, `actions`,
`next_observations`, `rewards`, `masks`, `dones` and optionally `infos`. Observations are dicts
of uint8 images (HxWx3, or kxHxWx3 when an observation-history wrapper stacked k frames: the
newest frame is kept) and a `state` vector (or kxS). An episode ends at a transition with
`dones` true; trailing transitions without one form a final, truncated episode.

Those pipelines mark time-outs as `dones` too; here an episode is terminal only if it ended in a
success (last reward > 0), otherwise it is a time-limit end (`is_last` without `is_terminal`).
Rewards become sparse 0/1 (`reward > 0`) unless `binary_reward=False` (ConRFT's +10/-0.05
shaping is then kept as is). Files are read with `safe_pickle`'s restricted unpickler (numpy
arrays and builtin containers/scalars only): a pickle that names anything else is refused.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import pickle
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from vlarft.datasets.episode_builder import EpisodeBuilder
from vlarft.datasets.safe_pickle import UnsafePickleError, load_data_pickle
from vlarft.datasets.schema import Episode, EpisodeSpec

SUFFIXES = (".pkl", ".pickle")


@dataclasses.dataclass(frozen=True)
class PickleImportConfig:
    """How to map a HIL-SERL pickle onto the schema.

    Attributes:
      task: task name stored in the metadata.
      instruction: language instruction (those pickles carry none).
      camera_names: pickle image key -> our camera name; unlisted keys keep their own name.
      ignore_keys: observation keys to drop (e.g. ConRFT's unused `side_classifier`).
      binary_reward: map rewards to 1.0 if > 0 else 0.0.
      human_actions: mark every step as a human action (teleoperated demos); steps whose
        `infos` carry `intervene_action` are always marked, with that action stored.
      robot: robot name stored in the metadata.
      operator: operator name stored in the metadata.
    """

    task: str = "unknown"
    instruction: str = "do the task"
    camera_names: Mapping[str, str] = dataclasses.field(default_factory=dict)
    ignore_keys: Sequence[str] = ()
    binary_reward: bool = True
    human_actions: bool = True
    robot: str = "franka"
    operator: str = ""


def load_transitions(path: str | os.PathLike) -> list[dict]:
    """Unpickles a transition list (restricted unpickler); raises ValueError naming the file when
    it is damaged or asks for anything but data."""
    try:
        data = load_data_pickle(path)
    except UnsafePickleError as e:
        raise ValueError(f"{path}: not a data-only pickle ({e})") from None
    except (EOFError, pickle.UnpicklingError, AttributeError, ImportError, IndexError, KeyError,
            TypeError, ValueError, MemoryError) as e:
        raise ValueError(f"{path}: truncated or not a transition pickle ({type(e).__name__}: {e})") from None
    if not isinstance(data, (list, tuple)) or not all(isinstance(t, Mapping) for t in data):
        raise ValueError(f"{path}: expected a list of transition dicts, got {type(data).__name__}")
    if not data:
        raise ValueError(f"{path}: holds no transitions")
    return list(data)


def split_episodes(transitions: Sequence[Mapping]) -> list[list[Mapping]]:
    """Cuts a transition list at every `dones`."""
    episodes, current = [], []
    for t in transitions:
        current.append(t)
        if bool(np.asarray(t["dones"]).any()):
            episodes.append(current)
            current = []
    if current:
        episodes.append(current)
    return episodes


def spec_of(transition: Mapping, config: PickleImportConfig) -> EpisodeSpec:
    """The EpisodeSpec implied by one transition of a pickle."""
    cameras = {}
    for key, value in _images(transition["observations"], config).items():
        cameras[key] = tuple(value.shape[:2])
    return EpisodeSpec(cameras=cameras, state_dim=int(_newest(transition["observations"]["state"], 1).size),
                       action_dim=int(np.asarray(transition["actions"]).size))


def episodes_from_pickle(path: str | os.PathLike, config: PickleImportConfig,
                         spec: EpisodeSpec | None = None) -> list[Episode | Exception]:
    """All episodes of one pickle file; an episode that fails validation is returned as its
    exception (so one bad episode does not hide the good ones of the same file)."""
    transitions = load_transitions(path)
    spec = spec or spec_of(transitions[0], config)
    recorded_at = datetime.datetime.fromtimestamp(os.path.getmtime(path), datetime.timezone.utc)
    out = []
    for index, episode in enumerate(split_episodes(transitions)):
        episode_id = f"{Path(path).stem}-{index:04d}"
        try:
            out.append(_episode(episode, config, spec, episode_id, str(path),
                                recorded_at.isoformat(timespec="seconds")))
        except (KeyError, ValueError, TypeError) as e:
            out.append(e if isinstance(e, ValueError) else ValueError(f"episode {episode_id!r}: bad transition ({e!r})"))
    return out


def _newest(array, frame_ndim: int) -> np.ndarray:
    """Drops a stacked observation-history axis, keeping the newest frame."""
    arr = np.asarray(array)
    return arr[-1] if arr.ndim > frame_ndim else arr


def _images(observation: Mapping, config: PickleImportConfig) -> dict[str, np.ndarray]:
    images = {}
    for key, value in observation.items():
        if key == "state" or key in config.ignore_keys:
            continue
        images[config.camera_names.get(key, key)] = _newest(value, 3)
    return images


def _observation(observation: Mapping, config: PickleImportConfig) -> dict[str, np.ndarray]:
    obs = {f"image_{cam}": img for cam, img in _images(observation, config).items()}
    obs["state"] = _newest(observation["state"], 1).astype(np.float32)
    return obs


def _episode(transitions: Sequence[Mapping], config: PickleImportConfig, spec: EpisodeSpec,
             episode_id: str, file_path: str, recorded_at: str) -> Episode:
    raw_rewards = [float(np.asarray(t["rewards"])) for t in transitions]
    success = raw_rewards[-1] > 0
    terminal = success and bool(np.asarray(transitions[-1]["dones"]).any())
    builder = EpisodeBuilder(spec, episode_id=episode_id, task=config.task,
                             instruction=config.instruction, source="demo", robot=config.robot,
                             operator=config.operator, file_path=file_path)
    builder.start(_observation(transitions[0]["observations"], config), recorded_at=recorded_at)
    for index, (t, raw_reward) in enumerate(zip(transitions, raw_rewards)):
        info = t.get("infos") or {}
        intervened = "intervene_action" in info
        action = np.asarray(info["intervene_action"] if intervened else t["actions"], np.float32)
        reward = float(raw_reward > 0) if config.binary_reward else raw_reward
        builder.add(action.reshape(-1), reward, _observation(t["next_observations"], config),
                    terminated=terminal and index == len(transitions) - 1,
                    intervention=intervened or config.human_actions)
    return builder.finish(success=success)

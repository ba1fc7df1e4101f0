"""Builds schema episodes step by step from an environment loop (recording and online actors)."""

from __future__ import annotations

import datetime
from typing import Mapping

import numpy as np

from vlarft.datasets.schema import Episode, EpisodeSpec, SchemaError, validate_episode


def utc_now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class EpisodeBuilder:
    """Accumulates (o_t, a_t, r_t) and the final observation into the RLDS column layout.

    Usage: `start(obs)`, then `add(action, reward, next_obs, terminated=...)` once per env step,
    then `finish(success=...)` returns the validated episode.
    """

    def __init__(self, spec: EpisodeSpec, *, episode_id: str, task: str, instruction: str,
                 source: str = "demo", robot: str = "", operator: str = "", file_path: str = "",
                 language_embedding=None):
        self.spec = spec
        self.language_embedding = None if language_embedding is None else np.asarray(language_embedding, np.float32)
        self.metadata = dict(episode_id=episode_id, task=task, instruction=instruction,
                             source=source, success=False, robot=robot, operator=operator,
                             file_path=file_path, recorded_at="")
        self._observations: list[Mapping[str, np.ndarray]] = []
        self._actions: list[np.ndarray] = []
        self._rewards: list[float] = []
        self._interventions: list[bool] = []
        self._versions: list[int] = []
        self._terminated = False

    @property
    def num_transitions(self) -> int:
        return len(self._actions)

    def start(self, observation: Mapping[str, np.ndarray], recorded_at: str | None = None) -> None:
        self.metadata["recorded_at"] = recorded_at or utc_now_iso()
        self._observations = [_copy_obs(observation)]

    def add(self, action, reward: float, next_observation: Mapping[str, np.ndarray], *,
            terminated: bool, intervention: bool = False, policy_version: int = -1) -> None:
        if not self._observations:
            raise RuntimeError("EpisodeBuilder.add() before start()")
        if self._terminated:
            raise RuntimeError(f"episode {self.metadata['episode_id']!r} already reached a terminal")
        step = len(self._actions)
        action = np.asarray(action, np.float32)
        if action.shape != (self.spec.action_dim,):
            raise SchemaError(f"expected {self.spec.action_dim} action values, got shape {action.shape}",
                              episode_id=self.metadata["episode_id"], step=step, field="action")
        _check_same_layout(self._observations[0], next_observation, self.metadata["episode_id"], step + 1)
        self._actions.append(action.copy())
        self._rewards.append(float(reward))
        self._interventions.append(bool(intervention))
        self._versions.append(int(policy_version))
        self._observations.append(_copy_obs(next_observation))
        self._terminated = bool(terminated)

    def finish(self, *, success: bool) -> Episode:
        """The episode so far; `is_terminal` iff the last `add` reported `terminated`."""
        n = self.num_transitions
        steps = {
            "observation": {key: np.stack([o[key] for o in self._observations])
                            for key in self._observations[0]},
            "action": np.stack(self._actions + [np.zeros(self.spec.action_dim, np.float32)]),
            "reward": np.asarray(self._rewards + [0.0], np.float32),
            "discount": np.ones(n + 1, np.float32),
            "is_first": np.arange(n + 1) == 0,
            "is_last": np.arange(n + 1) == n,
            "is_terminal": (np.arange(n + 1) == n) & self._terminated,
            "language_instruction": np.asarray([self.metadata["instruction"]] * (n + 1), dtype=object),
            "intervention": np.asarray(self._interventions + [False]),
            "policy_version": np.asarray(self._versions + [-1], np.int32),
        }
        if self.language_embedding is not None:
            steps["language_embedding"] = np.tile(self.language_embedding, (n + 1, 1))
        if self._terminated:
            steps["discount"][n - 1:] = 0.0
        metadata = dict(self.metadata, success=bool(success))
        return validate_episode({"steps": steps, "episode_metadata": metadata}, self.spec)


def _check_same_layout(first: Mapping, observation: Mapping, episode_id: str, step: int) -> None:
    if set(first) != set(observation):
        raise SchemaError(f"observation keys {sorted(observation)} differ from the first step's {sorted(first)}",
                          episode_id=episode_id, step=step, field="observation")
    for key, value in observation.items():
        if np.shape(value) != first[key].shape:
            raise SchemaError(f"shape {np.shape(value)} differs from the first step's {first[key].shape}",
                              episode_id=episode_id, step=step, field=f"observation/{key}")


def _copy_obs(observation: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {key: np.array(value, copy=True) for key, value in observation.items()}

"""Evaluation episodes: success rate, episode lengths, and an MP4 a person can watch (`video.py`)."""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Protocol, Sequence

import numpy as np

from vlarft.agents.video import FrameLabel, video_frame, write_video
from vlarft.robot_io.control_timing import ControlPauses, steady_control


class Policy(Protocol):
    def reset(self) -> None: ...

    def act(self, observation: dict) -> np.ndarray: ...

    def warm_up(self, observation_space) -> None: ...


@dataclasses.dataclass
class EvalResult:
    """Figures of a batch of evaluation episodes.

    `mean_episode_length` counts every episode (a failure counts its full length);
    `mean_success_length` only the successful ones (the paper's protocol), NaN if none.
    """

    episodes: int
    successes: int
    lengths: list[int]
    success_flags: list[bool]
    video_path: str = ""
    control_pauses: dict = dataclasses.field(default_factory=dict)  # `ControlPauses.summary()` of the episodes

    @property
    def success_rate(self) -> float:
        return self.successes / self.episodes if self.episodes else 0.0

    @property
    def mean_episode_length(self) -> float:
        return float(np.mean(self.lengths)) if self.lengths else 0.0

    @property
    def mean_success_length(self) -> float:
        good = [n for n, ok in zip(self.lengths, self.success_flags) if ok]
        return float(np.mean(good)) if good else float("nan")

    def as_dict(self) -> dict:
        return {"success_rate": self.success_rate, "mean_episode_length": self.mean_episode_length,
                "mean_success_length": self.mean_success_length, "episodes": self.episodes}


def evaluate(policy: Policy, make_env: Callable[[], object], episodes: int, *, seed: int = 10_000,
             video_path: str = "", progress: Callable[[int], None] | None = None) -> EvalResult:
    """Runs `episodes` episodes with the policy alone in a new env; records the first one when `video_path`."""
    env = make_env()
    try:
        return run_episodes(policy, env, episodes, seed=seed, video_path=video_path, progress=progress)
    finally:
        env.close()


def run_episodes(policy: Policy, env, episodes: int, *, seed: int = 10_000, video_path: str = "",
                 progress: Callable[[int], None] | None = None) -> EvalResult:
    """`evaluate` on an env the caller owns (episode i is reset with seed + i)."""
    lengths, flags, frames = [], [], []
    pauses = ControlPauses()
    policy.warm_up(env.observation_space)  # compiled before a robot waits for its first action
    with steady_control():
        for index in range(episodes):
            policy.reset()
            observation, info = env.reset(seed=seed + index)
            pauses.observed()
            record = bool(video_path) and index == 0
            if record:
                frames.append(video_frame(observation, FrameLabel(step=0)))
            steps, success = 0, False
            while True:
                action = policy.act(observation)
                pauses.acting()
                observation, reward, terminated, truncated, info = env.step(action)
                pauses.observed()
                steps += 1
                if record:
                    frames.append(video_frame(observation, step_label(steps, reward, info)))
                if terminated or truncated:
                    success = bool(info.get("success", False))
                    break
            lengths.append(steps)
            flags.append(success)
            if progress:
                progress(index + 1)
    result = EvalResult(episodes=episodes, successes=sum(flags), lengths=lengths, success_flags=flags,
                        control_pauses=pauses.summary())
    if video_path and frames:
        result.video_path = write_video(frames, video_path)
    return result


def step_label(step: int, reward: float, info: dict) -> FrameLabel:
    """The video banner of the observation after `step` steps (a human acted when the env says so)."""
    return FrameLabel(step=step, reward=float(reward), success=bool(info.get("success", False)),
                      actor="human" if info.get("intervention", False) else "policy")

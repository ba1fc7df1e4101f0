"""Observation plumbing shared by training and acting: frame windows and state normalisation.

The backbone reads a window of W frames (Octo/ConRFT: 2). Frames before an episode's first step
are padding: a copy of the first frame with `timestep_mask` False, so they are never attended to.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Mapping

import numpy as np


def window_indices(num_steps: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices [T, W], mask [T, W]): frame t's window is steps t-W+1 .. t, clipped at 0."""
    offsets = np.arange(window) - (window - 1)
    raw = np.arange(num_steps)[:, None] + offsets[None, :]
    return np.maximum(raw, 0), raw >= 0


def episode_windows(observation: Mapping[str, np.ndarray], window: int) -> tuple[dict, np.ndarray]:
    """Every step's W-frame window of an episode's observation columns ([T, ...] -> [T, W, ...])."""
    length = len(next(iter(observation.values())))
    indices, mask = window_indices(length, window)
    return {key: np.asarray(value)[indices] for key, value in observation.items()}, mask


class FrameHistory:
    """The last W observations of the running episode, for acting (batch of one)."""

    def __init__(self, window: int):
        self.window = window
        self.frames: list[Mapping[str, np.ndarray]] = []

    def reset(self) -> None:
        self.frames = []

    def push(self, observation: Mapping[str, np.ndarray]) -> tuple[dict, np.ndarray]:
        """Adds a frame; returns ({key: [1, W, ...]}, mask [1, W])."""
        self.frames = (self.frames + [observation])[-self.window:]
        pad = self.window - len(self.frames)
        frames = [self.frames[0]] * pad + self.frames
        stacked = {key: np.stack([f[key] for f in frames])[None] for key in observation}
        mask = (np.arange(self.window) >= pad)[None]
        return stacked, mask


@dataclasses.dataclass(frozen=True)
class StateNormalizer:
    """z-scores proprio with the dataset's statistics (constant dimensions map to 0)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def from_statistics(cls, stats: Mapping) -> "StateNormalizer":
        return cls(mean=tuple(stats["state"]["mean"]), std=tuple(stats["state"]["std"]))

    @classmethod
    def identity(cls, dim: int) -> "StateNormalizer":
        return cls(mean=(0.0,) * dim, std=(1.0,) * dim)

    def __call__(self, state):
        mean, std = np.asarray(self.mean, np.float32), np.asarray(self.std, np.float32)
        return (state - mean) / np.where(std > 1e-6, std, 1.0)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "StateNormalizer":
        data = json.loads(text)
        return cls(mean=tuple(data["mean"]), std=tuple(data["std"]))

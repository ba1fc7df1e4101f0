"""An RLDS split held in memory as flat step arrays, sampled as backbone windows.

Used where the backbone itself must see pixels: the SFT stage (behaviour cloning of backbone +
head) and computing embeddings. Each step is stored once; a W-frame window is gathered by index
at sampling time (frames before an episode's start are masked padding).
"""

from __future__ import annotations

import os
from typing import Iterable, Iterator

import numpy as np

from vlarft.agents.networks.text import tokenize
from vlarft.agents.observation import StateNormalizer
from vlarft.datasets.reader import iterate_episodes
from vlarft.datasets.schema import Episode


class StepData:
    """Every step of one split of an RLDS dataset, flattened across episodes."""

    def __init__(self, dataset_dir: str | os.PathLike, split: str, *, window: int, max_text_tokens: int,
                 vocab_size: int, normalizer: StateNormalizer, episodes: Iterable[Episode] | None = None):
        """`episodes`, when given, are used instead of reading `split` of `dataset_dir`, e.g. an RLDS
        dataset seen through a mapping without a conversion (`datasets.mapped_episodes`)."""
        columns: dict[str, list[np.ndarray]] = {}
        starts, instructions, is_last = [], [], []
        for episode in iterate_episodes(dataset_dir, split) if episodes is None else episodes:
            steps = episode["steps"]
            length = len(steps["is_first"])
            for key, value in steps["observation"].items():
                columns.setdefault(key, []).append(value)
            columns.setdefault("action", []).append(steps["action"])
            if "language_embedding" in steps:
                columns.setdefault("language_embedding", []).append(steps["language_embedding"])
            offset = sum(len(s) for s in starts)
            starts.append(np.full(length, offset, np.int64))
            instructions.extend(steps["language_instruction"])
            is_last.append(steps["is_last"])
        if not starts:
            raise ValueError(f"{dataset_dir}: split {split!r} has no episodes")
        self.arrays = {key: np.concatenate(parts) for key, parts in columns.items()}
        self.arrays["state"] = normalizer(self.arrays["state"]).astype(np.float32)
        self.episode_start = np.concatenate(starts)
        self.text_ids, self.text_mask = tokenize(list(instructions), max_text_tokens, vocab_size)
        self.window = window
        self.cameras = tuple(sorted(k[len("image_"):] for k in self.arrays if k.startswith("image_")))
        self.transitions = np.flatnonzero(~np.concatenate(is_last))  # steps with a real action

    def __len__(self) -> int:
        return len(self.episode_start)

    def batch(self, indices: np.ndarray) -> dict:
        """Windows ending at the given global step indices, plus their actions and instructions."""
        offsets = np.arange(self.window) - (self.window - 1)
        raw = indices[:, None] + offsets[None, :]
        mask = raw >= self.episode_start[indices][:, None]
        frames = np.where(mask, raw, self.episode_start[indices][:, None])
        return {
            "images": {cam: self.arrays[f"image_{cam}"][frames] for cam in self.cameras},
            "state": self.arrays["state"][frames],
            "timestep_mask": mask,
            "text_ids": self.text_ids[indices],
            "text_mask": self.text_mask[indices],
            "action": self.arrays["action"][indices],
            **({"language_embedding": self.arrays["language_embedding"][indices]}
               if "language_embedding" in self.arrays else {}),
        }

    def sample(self, rng: np.random.Generator, batch_size: int) -> dict:
        """A uniformly random batch of transitions (steps with a real action)."""
        return self.batch(rng.choice(self.transitions, size=batch_size))

    def iterate(self, batch_size: int, transitions_only: bool = True) -> Iterator[tuple[np.ndarray, dict]]:
        """Every (transition) step once, in order, as (indices, batch)."""
        indices = self.transitions if transitions_only else np.arange(len(self))
        for start in range(0, len(indices), batch_size):
            chunk = indices[start:start + batch_size]
            yield chunk, self.batch(chunk)

"""Dataset statistics for normalisation, stored as `dataset_statistics.json` beside a dataset.

Actions are summarised over real transitions only (the padding action of each episode's last
step is left out); states over every step. Percentiles are exact (numpy, linear).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

import numpy as np

FILENAME = "dataset_statistics.json"


def summarize(values: np.ndarray) -> dict[str, list[float]]:
    """mean/std/min/max/p01/p99 per column of a [N, D] array."""
    values = np.asarray(values, np.float64)
    if values.size == 0:
        return {}
    return {
        "mean": values.mean(0).tolist(),
        "std": values.std(0).tolist(),
        "min": values.min(0).tolist(),
        "max": values.max(0).tolist(),
        "p01": np.percentile(values, 1, axis=0).tolist(),
        "p99": np.percentile(values, 99, axis=0).tolist(),
    }


def compute_statistics(episodes: Iterable[tuple[np.ndarray, np.ndarray]]) -> dict:
    """Statistics of (actions[T, A], states[T, S]) pairs, one per episode, in full RLDS steps."""
    actions, states, num_episodes = [], [], 0
    for episode_actions, episode_states in episodes:
        actions.append(np.asarray(episode_actions)[:-1])
        states.append(np.asarray(episode_states))
        num_episodes += 1
    if not num_episodes:
        return {"num_episodes": 0, "num_transitions": 0, "num_steps": 0}
    actions, states = np.concatenate(actions), np.concatenate(states)
    return {
        "action": summarize(actions),
        "state": summarize(states),
        "num_episodes": num_episodes,
        "num_transitions": int(len(actions)),
        "num_steps": int(len(states)),
    }


def write_json_atomic(path: str | os.PathLike, payload) -> None:
    """Writes JSON to `path` through a temporary file and a rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=1, sort_keys=True))
    os.replace(tmp, path)


def load_statistics(dataset_dir: str | os.PathLike) -> dict:
    """Reads the statistics written beside a converted dataset."""
    path = Path(dataset_dir) / FILENAME
    if not path.exists():
        raise FileNotFoundError(f"{path}: no dataset statistics (was the dataset made by pipelines/convert_demos.py?)")
    return json.loads(path.read_text())

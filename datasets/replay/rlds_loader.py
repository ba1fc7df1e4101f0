"""Fills a replay table from a converted RLDS dataset (the offline demos)."""

from __future__ import annotations

import os
import time
from typing import Sequence

import reverb
from tqdm import tqdm

from vlarft.agents.config import ReturnConfig
from vlarft.datasets.reader import iterate_episodes, open_dataset
from vlarft.datasets.replay.returns import episode_returns
from vlarft.datasets.replay.tables import (ReplayConfig, check_table_signature, connect,
                                           transition_signature)
from vlarft.datasets.replay.writer import TransitionWriter


def load_rlds_into_table(dataset_dir: str | os.PathLike, split: str, client: reverb.Client | str,
                         table: str = "demo", *,
                         observation_keys: Sequence[str] = ReplayConfig.observation_keys,
                         return_config: ReturnConfig = ReturnConfig(),
                         progress: bool = True) -> dict:
    """Streams every episode of `split` into `table` as transitions with Monte-Carlo returns.

    Returns are computed per episode with `monte_carlo_returns` (terminal vs time-limit end from
    the episode's `is_terminal`), whatever `mc_return` the dataset may already hold.

    Args:
      client: a reverb.Client or a server address.
    Raises:
      ValueError: naming the field and the dataset directory when an observation key is missing,
        or naming the table when its signature does not match these items.
    Returns:
      {"episodes", "transitions", "terminal_episodes", "time_limit_episodes",
       "intervention_transitions", "seconds", "table", "dataset_dir", "split"}.
    """
    signature = transition_signature(dataset_dir, observation_keys)
    if isinstance(client, str):
        client = connect(client)
    check_table_signature(client, table, signature)
    total = open_dataset(dataset_dir).info.splits[split].num_examples
    stats = dict(episodes=0, transitions=0, terminal_episodes=0, time_limit_episodes=0,
                 intervention_transitions=0)
    start = time.perf_counter()
    with TransitionWriter(client, table) as writer:
        bar = tqdm(iterate_episodes(dataset_dir, split), total=total, disable=not progress,
                   desc=f"{os.path.basename(os.fspath(dataset_dir).rstrip('/'))}:{split} -> {table}",
                   unit="ep")
        for episode in bar:
            steps = episode["steps"]
            stats["transitions"] += writer.write_episode(steps, observation_keys,
                                                         episode_returns(steps, return_config))
            stats["episodes"] += 1
            terminal = bool(steps["is_terminal"][-1])
            stats["terminal_episodes" if terminal else "time_limit_episodes"] += 1
            stats["intervention_transitions"] += int(steps["intervention"][:-1].sum())
            bar.set_postfix(transitions=stats["transitions"])
    stats.update(seconds=time.perf_counter() - start, table=table,
                 dataset_dir=os.fspath(dataset_dir), split=split)
    return stats

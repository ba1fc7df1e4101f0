"""Reverb replay: RLDS episodes -> transition tables -> mixed JAX training batches.

Item. One item is one transition t of an episode:
  {"observation": {key: o_t}, "action": a_t, "reward": r_t, "discount": d_t,
   "mc_return": G_t, "intervention": bool, "next_observation": {key: o_{t+1}}}
`key` ranges over `ReplayConfig.observation_keys` (`state`, `image_<camera>`, `embedding`);
`discount` is 0 on the transition into a true terminal, so the TD target is
r_t + gamma * d_t * Q(o_{t+1}); a time-limit end keeps d = 1 and bootstraps. `mc_return` is the
Monte-Carlo return-to-go (`returns.py`: G_T = 0 after a terminal, reward_bias / (1 - gamma)
after a time-limit end). Items are written step by step (`TransitionWriter`): next_observation
references the same stored cells as the next step's observation, so each frame is stored once.

Tables (`make_tables`). Both sample uniformly and drop the oldest item when full.
  demo   - offline demonstrations (`load_rlds_into_table`) and, online, human-intervention
           transitions; MinSize(min_size_demo) limiter.
  online - every transition the actor collects; SampleToInsertRatio limiter.
A learner batch takes `mixed_counts(batch_size, online_fraction)` rows from each (online first),
with a `source` column naming the table of each row (`make_batch_iterator`).

Update-to-data ratio. The online table's limiter lets the learner sample `samples_per_insert`
online rows per inserted online transition, blocking sampling beyond that: after a warm-up of
`min_size_online` items it may have sampled at most (inserts - min_size_online + 2) x
samples_per_insert rows (default `error_buffer`). With `round(batch_size * online_fraction)`
online rows per update, samples_per_insert = online rows x updates_per_env_step
(`ReplayConfig.for_training`). Inserts are (practically) never blocked: the actor is a robot.

Checkpointing. `ReplayServer(..., checkpoint_dir=DIR)` restores the newest Reverb checkpoint in
DIR at start; `checkpoint()` writes a new one (tables, items, data and limiter state).
`python -m vlarft.datasets.replay serve ...` runs a standalone server that checkpoints on exit.

The server listens on every interface: Reverb 0.14 cannot bind loopback only (see tables.py).
"""

import importlib

_EXPORTS = {
    "monte_carlo_returns": "returns", "episode_returns": "returns",
    "ReplayConfig": "tables", "ReplayServer": "tables", "ReplayError": "tables",
    "transition_signature": "tables", "make_tables": "tables", "connect": "tables",
    "TransitionWriter": "writer", "route_by_intervention": "writer",
    "load_rlds_into_table": "rlds_loader",
    "BatchIterator": "iterator", "make_batch_iterator": "iterator", "mixed_counts": "iterator",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):  # lazy: `returns` alone does not import TensorFlow/Reverb
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)

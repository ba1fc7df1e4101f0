"""`ConRFTBuilder`: wires replay tables, batch iterators, the learner and the acting policy.

Like an Acme builder, it is the one place that knows how the parts fit for a given dataset spec,
agent config, stage loss and backbone export: which observation fields replay stores (the cached
embedding and proprio; the cameras too for a pixel critic), the table layout and update-to-data
ratio, how batches mix demo and online rows, and how the actor's policy is assembled.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from vlarft.agents.config import AgentConfig, LossConfig
from vlarft.agents.export import PolicyExport
from vlarft.datasets.schema import EpisodeSpec


@dataclasses.dataclass(frozen=True)
class ReplayPlan:
    """How the online stage's replay is paced (see `ReplayConfig.for_training`).

    Attributes:
      online_fraction: share of each batch from the online table (0 offline, 0.5 online).
      updates_per_env_step: learner updates each collected env step pays for (the UTD ratio).
      min_online: online transitions before learning starts.
      max_actor_lead: > 0: the actor blocks this many steps ahead of the learner's budget.
      max_actors: actor progress slots on the server (`datasets/replay/reliable.py`).
    """

    online_fraction: float = 0.0
    updates_per_env_step: float = 1.0
    min_online: int = 100
    max_actor_lead: int = 0
    max_actors: int = 8


class ConRFTBuilder:
    """Builds the agent's parts for one run."""

    def __init__(self, config: AgentConfig, loss: LossConfig, spec: EpisodeSpec, export: PolicyExport,
                 plan: ReplayPlan = ReplayPlan()):
        self.config, self.loss, self.spec, self.export, self.plan = config, loss, spec, export, plan
        pixels = config.critic.input == "pixels"
        self.observation_keys = ("embedding", "state") + (tuple(f"image_{c}" for c in spec.cameras) if pixels else ())

    def replay_config(self):
        from vlarft.datasets.replay import ReplayConfig

        train = dataclasses.replace(self.config.train, online_fraction=self.plan.online_fraction)
        replay = ReplayConfig.for_training(train, self.plan.updates_per_env_step, min_size_online=self.plan.min_online,
                                           observation_keys=self.observation_keys)
        if self.plan.max_actor_lead:
            spi = replay.samples_per_insert
            offset = self.plan.min_online * spi
            replay = dataclasses.replace(replay, error_buffer=(offset - 2 * spi, offset + self.plan.max_actor_lead * spi))
        return replay

    def signature(self):
        from vlarft.datasets.replay import transition_signature

        return transition_signature(self.spec, self.observation_keys)

    def make_replay_server(self, checkpoint_dir: str | None = None, port: int | None = None):
        """demo + online tables, the one-item `params` table actors fetch parameters from, and one
        progress table per actor slot."""
        from vlarft.agents.parameters import params_table
        from vlarft.datasets.replay import ReplayServer, make_tables
        from vlarft.datasets.replay.reliable import progress_tables

        tables = (make_tables(self.replay_config(), self.signature()) + [params_table()]
                  + progress_tables(self.plan.max_actors))
        return ReplayServer(tables, port=port or None, checkpoint_dir=checkpoint_dir)

    def load_demos(self, server, dataset_dir: str, progress: bool = True) -> dict:
        """Streams the dataset's train split into the demo table (with Monte-Carlo returns)."""
        from vlarft.datasets.replay import load_rlds_into_table

        return load_rlds_into_table(dataset_dir, "train", server.client, self.replay_config().demo_table,
                                    observation_keys=self.observation_keys, return_config=self.config.returns,
                                    progress=progress)

    def make_iterator(self, address: str, *, demo_only: bool = False, rate_limiter_timeout_ms: int = -1):
        """Learner batches: `online_fraction` of each batch from online, the rest from demo."""
        from vlarft.datasets.replay import make_batch_iterator, mixed_counts

        replay = self.replay_config()
        fraction = 0.0 if demo_only else self.plan.online_fraction
        counts = mixed_counts(self.config.train.batch_size, fraction, online_table=replay.online_table,
                              demo_table=replay.demo_table)
        return make_batch_iterator(address, counts, self.signature(), rate_limiter_timeout_ms=rate_limiter_timeout_ms)

    def make_transition_writer(self, client):
        """The actor's writer: every step to online, human interventions also to demo."""
        from vlarft.datasets.replay import TransitionWriter, route_by_intervention

        replay = self.replay_config()
        return TransitionWriter(client, route_by_intervention(replay.online_table, replay.demo_table))

    def make_learner(self):
        from vlarft.agents.learner import Learner

        normalizer = self.export.normalizer
        online_source = 0 if self.plan.online_fraction > 0 else None  # mixed batches put online rows first
        return Learner(self.config, self.loss, self.spec.action_dim, tuple(self.spec.cameras),
                       np.asarray(normalizer.mean), np.asarray(normalizer.std), online_source)

    def make_policy(self, head_params=None, *, deterministic: bool = True, seed: int = 0):
        """The acting policy: the export's backbone with `head_params` (default the export's head)."""
        policy = self.export.policy(deterministic=deterministic, seed=seed)
        if head_params is not None:
            policy.set_params(head_params=head_params)
        return policy

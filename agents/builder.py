"""`ConRFTBuilder`: wires replay tables, batch iterators, the learner and the acting policy.

Like an Acme builder, it is the one place that knows how the parts fit for a given dataset spec,
agent config, stage loss and backbone export: which observation fields replay stores (the cached
embedding and proprio; the cameras too for a pixel critic), the table layout and update-to-data
ratio, how batches mix demo and online rows, and how the actor's policy is assembled.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np

from vlarft.agents.config import AgentConfig, LossConfig
from vlarft.agents.export import PolicyExport
from vlarft.datasets.schema import EpisodeSpec


class ConRFTBuilder:
    """Builds the agent's parts for one run.

    It is also the "conrft" entry of the agent registry (`agents/registry.py`): another online
    method subclasses it and overrides what differs (`make_learner`, `make_policy`,
    `acting_template`, `starting_state`, `init_stages`, `runs_gate`).
    """

    init_stages = ("offline",)  # the stage of the export the online stage may start from (--init_from)
    runs_gate = True  # the online stage checks the starting policy first (`agents/stage_gate.py`)
    learner_class = None  # a `Learner` subclass (None: `Learner`), built with the same arguments

    def __init__(self, config: AgentConfig, loss: LossConfig, spec: EpisodeSpec, export: PolicyExport, *,
                 online: bool = False, actor_lead: int = 0):
        """`online`: the online stage's tables and batches (`config.online`: mixed batches, the
        UTD-paced online table); else demo-only batches. `actor_lead`: env steps an actor may run
        ahead of the learner's budget (0: unlimited; `OnlineConfig.actor_lead`)."""
        self.config, self.loss, self.spec, self.export = config, loss, spec, export
        self.online, self.actor_lead = online, actor_lead
        self.online_fraction = config.online.online_fraction if online else 0.0
        pixels = config.critic.input == "pixels"
        self.observation_keys = ("embedding", "state") + (tuple(f"image_{c}" for c in spec.cameras) if pixels else ())

    @functools.cached_property
    def parallel(self):
        """The learner's devices (`TrainConfig.devices`): items arrive with their rows sharded over
        them, the state is replicated (`DataParallel.replicate`)."""
        from vlarft.agents.sharding import DataParallel

        return DataParallel.from_flag(self.config.train.devices)

    def replay_config(self):
        from vlarft.datasets.replay import ReplayConfig

        online, workers = self.config.online, self.config.train.replay_sampler_workers
        replay = ReplayConfig.for_training(self.config.train.batch_size, self.online_fraction,
                                           online.updates_per_env_step, min_size_online=online.min_online,
                                           observation_keys=self.observation_keys,
                                           **({"sampler_workers": workers} if workers else {}))
        if self.actor_lead:
            spi = replay.samples_per_insert
            offset = online.min_online * spi
            replay = dataclasses.replace(replay, error_buffer=(offset - 2 * spi, offset + self.actor_lead * spi))
        return replay

    def rows_per_source(self) -> dict[str, int]:
        """Rows each table gives one batch: the online share first, then demo."""
        from vlarft.datasets.replay import mixed_counts

        replay = self.replay_config()
        return mixed_counts(self.config.train.batch_size, self.online_fraction, online_table=replay.online_table,
                            demo_table=replay.demo_table)

    def signature(self):
        from vlarft.datasets.replay import transition_signature

        return transition_signature(self.spec, self.observation_keys)

    def make_replay_server(self, checkpoint_dir: str | None = None, port: int | None = None):
        """demo + online tables, the one-item `params` table actors fetch parameters from, and per
        actor slot (`OnlineConfig.max_actors`, `--actor_slots`) a progress and a claim table."""
        from vlarft.agents.parameters import params_table
        from vlarft.datasets.replay import ReplayServer, make_tables
        from vlarft.datasets.replay.reliable import progress_tables
        from vlarft.datasets.replay.slots import claim_tables

        slots = self.config.online.max_actors
        tables = (make_tables(self.replay_config(), self.signature()) + [params_table()] + progress_tables(slots)
                  + claim_tables(slots))
        return ReplayServer(tables, port=port or None, checkpoint_dir=checkpoint_dir)

    def load_demos(self, server, dataset_dir: str, progress: bool = True) -> dict:
        """Streams the dataset's train split into the demo table (with Monte-Carlo returns)."""
        from vlarft.datasets.replay import load_rlds_into_table

        return load_rlds_into_table(dataset_dir, "train", server.client, self.replay_config().demo_table,
                                    observation_keys=self.observation_keys, return_config=self.config.returns,
                                    progress=progress)

    def make_iterator(self, address: str, *, demo_only: bool = False, rate_limiter_timeout_ms: int = -1,
                      steps: int = 1):
        """Learner items: each holds `steps` learner steps' `critic_actor_ratio` batches, every
        batch `online_fraction` online rows and the rest demo rows (`Learner.step` / `Learner.steps`
        split them), placed with their rows sharded over the learner's devices (`parallel`)."""
        from vlarft.datasets.replay import make_batch_iterator

        counts = self.rows_per_source()
        if demo_only:
            counts = {self.replay_config().demo_table: self.config.train.batch_size}
        per_step = {table: rows * self.loss.critic_actor_ratio for table, rows in counts.items()}
        self.parallel.check_rows(sum(per_step.values()))
        per_item = {table: rows * steps for table, rows in per_step.items()}
        return make_batch_iterator(address, per_item, self.signature(), device=self.parallel.rows,
                                   rate_limiter_timeout_ms=rate_limiter_timeout_ms,
                                   sampler_workers=self.replay_config().sampler_workers)

    def make_transition_writer(self, client):
        """The actor's writer: every step to online, human interventions also to demo."""
        from vlarft.datasets.replay import TransitionWriter, route_by_intervention

        replay = self.replay_config()
        return TransitionWriter(client, route_by_intervention(replay.online_table, replay.demo_table))

    def make_learner(self):
        from vlarft.agents.learner import Learner

        normalizer = self.export.normalizer
        online_source = 0 if self.online_fraction > 0 else None  # mixed batches put online rows first
        learner_class = self.learner_class or Learner
        return learner_class(self.config, self.loss, self.spec.action_dim, tuple(self.spec.cameras),
                             np.asarray(normalizer.mean), np.asarray(normalizer.std), online_source,
                             rows_per_source=tuple(self.rows_per_source().values()))

    @classmethod
    def policy_from_export(cls, export: PolicyExport, *, deterministic: bool = True, steps: int = 1, seed: int = 0):
        """The acting policy of an export this agent's online stage wrote (`tools/eval_policy.py`
        via `registry.export_policy`): backbone + consistency head, `steps` sampler steps."""
        return export.policy(deterministic=deterministic, steps=steps, seed=seed)

    def make_policy(self, head_params=None, *, deterministic: bool = True, seed: int = 0):
        """The acting policy: the export's backbone with `head_params` (default the export's head;
        learner parameters are fetched to the host first, whatever devices they live on)."""
        policy = self.export.policy(deterministic=deterministic, seed=seed)
        if head_params is not None:
            policy.set_params(head_params=jax.device_get(head_params))
        return policy

    def acting_template(self):
        """Parameters shaped like those the learner publishes and the actor's policy acts with."""
        return self.export.head_params

    def starting_state(self, learner, fresh, init_from: str):
        """The online stage's first learner state: the offline run's checkpoint (`fresh` gives
        the structure)."""
        from pathlib import Path

        from vlarft.agents.checkpointing import Checkpointer

        offline = Checkpointer(Path(init_from) / "checkpoints")
        try:
            state, _ = offline.restore(fresh)
        finally:
            offline.close()
        return state

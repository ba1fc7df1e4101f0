"""The online learner loop: update while actors collect, publish, checkpoint, stop with them.

Pacing. Batches come from one long-lived iterator whose online rows are rate-limited by the
`online` table (`samples_per_insert` = online rows x updates_per_env_step), so the learner
never takes more updates than the collected env steps pay for; in lockstep the table also
holds the actor back once it is `lockstep_lead` steps ahead, so the ratio holds both ways.
The loop checks `done()` (collection finished) before every update and while the limiter holds
sampling back, so it stops with collection instead of spending budget on a frozen buffer.
"""

from __future__ import annotations

from typing import Any, Callable

import jax

from vlarft.agents.metrics_log import TrainingLog, check_finite
from vlarft.agents.online_log import OnlineRecord
from vlarft.agents.parameters import ReverbParameterStore

POLL_S = 0.05  # how often a learner held back by the rate limiter checks whether collection ended


class LearnerLoop:
    """Updates while the actor collects; publishes parameters, logs episodes, checkpoints.

    Args:
      learner, state: the `Learner` and its starting state (`state` always holds the newest
        one, so an interruption can save it).
      batches: the online iterator (`ConRFTBuilder.make_iterator`, rate limiter waits forever).
      store: the parameter store actors read.
      save: state -> None, the durable save (`DurableSaver.save` of the state).
      done: () -> True once collection has ended.
      max_steps: stop at this learner step (None: with collection).
      progress: () -> the number shown on the progress bar (env steps or learner steps).
      publish_every, log_every, checkpoint_every: in learner steps.
      actor_from: the first learner step that updates the actor (earlier ones warm the critic up).
    """

    def __init__(self, learner, state, batches, store: ReverbParameterStore, save: Callable[[Any], None],
                 log: TrainingLog, record: OnlineRecord, *, done: Callable[[], bool], max_steps: int | None,
                 progress: Callable[[], int], publish_every: int, log_every: int, checkpoint_every: int,
                 actor_from: int = 0):
        self.learner, self.state, self.batches, self.store = learner, state, batches, store
        self.save, self.log, self.record = save, log, record
        self.done, self.max_steps, self.progress = done, max_steps, progress
        self.publish_every, self.log_every, self.checkpoint_every = publish_every, log_every, checkpoint_every
        self.actor_from = actor_from
        self.updates = 0  # learner steps this run made

    def run(self) -> Any:
        while self.max_steps is None or int(self.state.step) < self.max_steps:
            self.record.drain(self.log)
            if self.done():
                return self.state
            item = self.batches.next_within(POLL_S)
            if item is None:  # held back by the rate limiter
                continue
            step = int(self.state.step)
            new_state, metrics = self.learner.step(self.state, item, update_actor=step >= self.actor_from)
            metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
            check_finite(metrics, step + 1)
            self.state, step = new_state, step + 1
            self.updates += 1
            if step % self.publish_every == 0:
                self.store.publish(new_state.policy_params, step)
            if step % self.log_every == 0:
                self.log.scalars(step, metrics, prefix="train/")
            if step % self.checkpoint_every == 0:
                self.save(new_state)
            self.log.progress(self.progress(), metrics)
        return self.state

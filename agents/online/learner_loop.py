"""The online learner loop: update while actors collect, publish, checkpoint, stop with them.

Pacing. Batches come from one long-lived iterator whose online rows are rate-limited by the
`online` table (`samples_per_insert` = online rows x updates_per_env_step), so the learner
never takes more updates than the collected env steps pay for; in lockstep the table also
holds the actor back once it is `lockstep_lead` steps ahead, so the ratio holds both ways.
The loop checks `done()` (collection finished) before every update and while the limiter holds
sampling back, so it stops with collection instead of spending budget on a frozen buffer.

Dispatch. Each item holds `steps_per_dispatch` learner steps' rows, run by one jitted call
(`Learner.steps`); publishing, logging and checkpoints happen after the call in which their
step count is crossed, and whether the actor is updated is decided per call (from its first
step). `waits` accounts the loop's time: waiting for a batch (limiter or sampling), in the
update (dispatch + device), and the rest (publish, log, save).
"""

from __future__ import annotations

import time
from typing import Any, Callable

import jax

from vlarft.agents.metrics_log import TrainingLog, check_finite, crossed
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
      steps_per_dispatch: learner steps per item and jitted call (`OnlineConfig.steps_per_dispatch`).
    """

    def __init__(self, learner, state, batches, store: ReverbParameterStore, save: Callable[[Any], None],
                 log: TrainingLog, record: OnlineRecord, *, done: Callable[[], bool], max_steps: int | None,
                 progress: Callable[[], int], publish_every: int, log_every: int, checkpoint_every: int,
                 actor_from: int = 0, steps_per_dispatch: int = 1):
        self.learner, self.state, self.batches, self.store = learner, state, batches, store
        self.save, self.log, self.record = save, log, record
        self.done, self.max_steps, self.progress = done, max_steps, progress
        self.publish_every, self.log_every, self.checkpoint_every = publish_every, log_every, checkpoint_every
        self.actor_from = actor_from
        self.steps_per_dispatch = steps_per_dispatch
        self.updates = 0  # learner steps this run made
        self.waits = {"batch_s": 0.0, "update_s": 0.0, "other_s": 0.0}  # where the loop's time went

    def run(self) -> Any:
        k = self.steps_per_dispatch
        clock = time.perf_counter()
        while self.max_steps is None or int(self.state.step) < self.max_steps:
            self.record.drain(self.log)
            if self.done():
                break
            item = self.batches.next_within(POLL_S)
            clock = self._account("batch_s", clock)
            if item is None:  # held back by the rate limiter
                continue
            before = int(self.state.step)
            new_state, metrics = self.learner.steps(self.state, item, k, update_actor=before >= self.actor_from)
            metrics = {key: float(v) for key, v in jax.device_get(metrics).items()}
            clock = self._account("update_s", clock)
            step = before + k
            check_finite(metrics, step)
            self.state = new_state
            self.updates += k
            if crossed(before, step, self.publish_every):
                self.store.publish(new_state.policy_params, step)
            if crossed(before, step, self.log_every):
                self.log.scalars(step, metrics, prefix="train/")
            if crossed(before, step, self.checkpoint_every):
                self.save(new_state)
            self.log.progress(self.progress(), metrics)
            clock = self._account("other_s", clock)
        return self.state

    def _account(self, kind: str, since: float) -> float:
        now = time.perf_counter()
        self.waits[kind] += now - since
        return now

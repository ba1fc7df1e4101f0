"""The online actor: episodes on the robot with a human able to take over, streamed into replay.

`OnlineActor` (a thread) runs episodes until its env-step budget is spent: the policy acts, the
human device behind the `InterventionWrapper` may take over at any step, every step goes to the
`online` table through a `ReliableWriter` as it happens (interventions also to `demo`), every
episode is written as a raw RLDS episode file (source "online", intervention flags, the policy
version per step), and new parameters apply at step boundaries. `ParameterPoller` fetches
publications in the background, so a dead server never stalls the control loop.
`robot_io/control_timing.steady_control` keeps the garbage collector and a learner thread's
Python from stalling it; `ControlPauses` records each observation -> action pause (the result's
`control_pauses`).
`PeriodicEvaluation` runs deterministic, intervention-free episodes every N env steps.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
import uuid
from typing import Any, Callable

import numpy as np

from vlarft.agents.evaluation import run_episodes
from vlarft.agents.online_log import EpisodeStats, EvalPoint, OnlineRecord
from vlarft.agents.parameters import Published, ReverbParameterStore, UntrustedPublication
from vlarft.datasets.episode_builder import EpisodeBuilder
from vlarft.datasets.frames import as_stored
from vlarft.datasets.raw_episodes import next_episode_path, write_raw_episode
from vlarft.datasets.replay.reliable import CollectionStats
from vlarft.datasets.replay.tables import ReplayError
from vlarft.datasets.schema import EpisodeSpec
from vlarft.robot_io.contract import INFO_INTERVENTION
from vlarft.robot_io.control_timing import ControlPauses, steady_control
from vlarft.robot_io.intervention import operator_outcome


@dataclasses.dataclass
class PeriodicEvaluation:
    """Evaluation episodes during online training: deterministic policy, no human, fixed seeds.

    Run by the actor between training episodes once `every` env steps have passed since the
    last one (and at the start), on the robot it trains on, with the newest parameters.
    """

    policy: Any  # a deterministic ConRFTPolicy
    every: int
    episodes: int
    seed: int
    video_dir: str = ""

    def first_due(self, steps_done: int) -> int:
        return -(-steps_done // self.every) * self.every


class SuccessProbe:
    """Transitions of successful online episodes (up to `capacity`): what the critic should learn
    to value. The stage reports the critic's mean Q on them before and after online learning."""

    def __init__(self, capacity: int = 512):
        self.capacity, self.steps = capacity, []

    def add_episode(self, steps: list[dict]) -> None:
        self.steps.extend(steps[:self.capacity - len(self.steps)])

    def batch(self) -> tuple[dict, np.ndarray] | None:
        if not self.steps:
            return None
        observation = {k: np.stack([s["observation"][k] for s in self.steps]) for k in self.steps[0]["observation"]}
        return observation, np.stack([s["action"] for s in self.steps])


class ParameterPoller(threading.Thread):
    """Fetches the newest publication in the background (`latest`), so the control loop never
    waits on the network: a dead server stalls this thread, not the robot. A publication that is
    not the learner's (`UntrustedPublication`) is never adopted: it is counted (`rejected`) and
    logged."""

    def __init__(self, store: ReverbParameterStore, client: Callable[[], Any], stop: threading.Event,
                 period_s: float = 0.1):
        super().__init__(name="parameter-poller", daemon=True)
        self.store, self.client, self.stop, self.period_s = store, client, stop, period_s
        self.latest = None
        self.rejected = 0
        self._last_rejection = ""

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.store.client = self.client()
                self.latest = self.store.latest() or self.latest
            except UntrustedPublication as error:
                self.reject(error)
            except Exception:  # noqa: BLE001 - the server is away; the writer reconnects
                pass
            self.stop.wait(self.period_s)

    def reject(self, error: UntrustedPublication) -> None:
        """Counts a publication the actor refused; logs each new reason."""
        self.rejected += 1
        if str(error) != self._last_rejection:
            self._last_rejection = str(error)
            logging.getLogger(__name__).warning("parameters refused (acting on with the last trusted ones): %s",
                                                error)


class OnlineActor(threading.Thread):
    """Runs online episodes until `env_steps` steps are done or `stop` is set.

    `writer` is a `ReliableWriter`: when the replay server dies the actor acts on with its last
    parameters and journals the steps until the server is back. `wait_durable` (a remote actor)
    makes it stay at the end until its learner has checkpointed every step. `cameras`: the
    cameras whose frames (as stored, `datasets.frames.as_stored`) the replay transitions also hold
    (a pixel critic or pixel actor; default none: embedding + proprio only).
    """

    def __init__(self, *, make_env: Callable[[], Any], policy, writer, store: ReverbParameterStore, episode_dir: str,
                 spec: EpisodeSpec, env_steps: int, steps_before: int, seed: int, record: OnlineRecord,
                 stop: threading.Event, evaluation: PeriodicEvaluation | None = None, actor_index: int = 0,
                 operator: str = "scripted_intervention", wait_durable: bool = False,
                 cameras: tuple[str, ...] = ()):
        super().__init__(name="online-actor", daemon=True)
        self.cameras = tuple(cameras)
        self.make_env, self.env = make_env, None  # built in the actor's thread: its GL context lives there
        self.policy, self.writer = policy, writer
        self.episode_dir, self.spec, self.env_steps, self.seed = episode_dir, spec, env_steps, seed
        self.record, self.stop, self.evaluation = record, stop, evaluation
        self.actor_index, self.operator, self.wait_durable = actor_index, operator, wait_durable
        self.version = int(getattr(policy, "version", -1))  # the parameters it acts with
        self.incarnation: int | None = None  # of the learner that published them
        self.poller = ParameterPoller(store, lambda: writer.client, stop)
        self._seen, self._reconnects_seen = None, 0
        self.steps_before, self.steps_done, self.episodes = steps_before, 0, 0
        self.intervention_steps, self.started = 0, time.monotonic()
        self.probe = SuccessProbe()
        self.pauses = ControlPauses()  # observation -> next action, what a robot's watchdog sees
        self.next_eval = evaluation.first_due(steps_before) if evaluation else None
        self.error: BaseException | None = None

    @property
    def total_steps(self) -> int:
        return self.steps_before + self.steps_done

    def run(self) -> None:
        try:
            self.env = self.make_env()
            self.policy.warm_up(self.env.observation_space)  # compiled before the robot waits on it
            with steady_control():
                self.started = time.monotonic()
                self.poller.start()
                while self.steps_done < self.env_steps and not self.stop.is_set():
                    self._maybe_evaluate()
                    self._episode()
                self._maybe_evaluate()
            self._finish_writer()
        except BaseException as e:  # surfaced by the thread that started the actor
            self.error = e
        finally:
            self.stop.set()
            if self.env is not None:
                self.env.close()

    def _finish_writer(self) -> None:
        """Delivers the journal and marks this actor finished. A remote actor (`wait_durable`) then
        stays until its learner has checkpointed every step (a learner restarted meanwhile makes it
        re-send first). An interrupted run waits only briefly (the steps are in the RLDS episode
        files either way)."""
        interrupted = self.steps_done < self.env_steps
        timeout_s = 5.0 if interrupted else 600.0
        deadline = time.monotonic() + timeout_s
        try:
            self.writer.finish(timeout_s=timeout_s)
            while self.wait_durable and not self._all_durable():
                if time.monotonic() > deadline:
                    raise ReplayError(f"the learner at {self.writer.address} did not confirm this actor's "
                                      f"{self.writer.records} steps within {timeout_s:g} s")
                time.sleep(0.1)
                self._refresh_params()
                self.writer.finish(timeout_s=max(1.0, deadline - time.monotonic()))
        except ReplayError as error:
            if not interrupted:
                raise
            logging.getLogger(__name__).warning("%s", error)

    def _all_durable(self) -> bool:
        published = self.poller.latest  # a watermark above `records` is untrusted (_refresh_params refuses it)
        return (published is not None and published.incarnation == self.writer.incarnation
                and published.durable_for(self.actor_index) == self.writer.records)

    def _watermark_trusted(self, published: Published) -> bool:
        """False (counted and logged) for a watermark beyond the steps this actor wrote."""
        try:
            published.check_watermark(self.actor_index, self.writer.records)
            return True
        except UntrustedPublication as error:
            self.poller.reject(error)
            return False

    def _refresh_params(self) -> None:
        """Adopts newer parameters (or a restarted learner's), trims the replay journal, and
        re-sends what a restarted learner's replay lacks."""
        published = self.poller.latest
        if published is None or published is self._seen:
            return
        self._seen = published
        if not self._watermark_trusted(published):
            return
        restarted = self.incarnation is not None and published.incarnation != self.incarnation
        self.writer.incarnation = published.incarnation  # progress from now on is for this learner
        if restarted and self.writer.reconnects == self._reconnects_seen:
            self.writer.resync()  # the writer did not notice the restart itself
        self._reconnects_seen = self.writer.reconnects
        self.writer.trim(published.durable_for(self.actor_index))
        if published.incarnation != self.incarnation or published.version > self.version:
            self.policy.set_params(head_params=published.params)
            self.version, self.incarnation = published.version, published.incarnation

    def _report_stats(self) -> None:
        """The collection figures the writer sends with its progress (the learner reports them per actor)."""
        self.writer.stats = CollectionStats(env_steps=self.total_steps, run_steps=self.steps_done,
                                            episodes=self.episodes, intervention_steps=self.intervention_steps,
                                            run_s=time.monotonic() - self.started)

    def _replay_observation(self, observation) -> dict:
        """What replay stores of the observation the policy acted on last: its embedding, the
        proprio and the frames of `cameras`."""
        stored = {"embedding": self.policy.last_embedding, "state": observation["state"]}
        return {**stored, **{f"image_{c}": as_stored(observation[f"image_{c}"]) for c in self.cameras}}

    def _maybe_evaluate(self) -> None:
        if self.next_eval is None or self.total_steps < self.next_eval or self.stop.is_set():
            return
        evaluation = self.evaluation
        self._refresh_params()  # score the newest parameters
        evaluation.policy.set_params(head_params=self.policy.head_params)
        video = (os.path.join(evaluation.video_dir, f"online_eval_{self.total_steps:07d}.mp4")
                 if evaluation.video_dir else "")
        result = run_episodes(evaluation.policy, self.env.env, evaluation.episodes, seed=evaluation.seed,
                              video_path=video)  # the env without the intervention wrapper: no human
        self.record.add_evaluation(EvalPoint(
            env_steps_total=self.total_steps, elapsed_s=self.record.elapsed(), policy_version=self.version,
            episodes=result.episodes, success_rate=result.success_rate,
            mean_success_length=result.mean_success_length, mean_episode_length=result.mean_episode_length,
            video=result.video_path))
        self.next_eval = evaluation.first_due(self.total_steps + 1)

    def _episode(self) -> None:
        robot = self.env.unwrapped.robot_spec
        path = next_episode_path(self.episode_dir, f"online_{robot.task}")
        builder = EpisodeBuilder(self.spec, episode_id=f"{robot.task}-online-{uuid.uuid4().hex[:12]}", task=robot.task,
                                 instruction=robot.instruction, source="online", robot=robot.robot,
                                 operator=self.operator, file_path=str(path))
        self._refresh_params()
        observation, info = self.env.reset(seed=self.seed + self.episodes)
        self.pauses.observed()
        self.policy.reset()
        builder.start(observation)
        action = self.policy.act(observation)
        steps = []
        while True:
            replay_observation = self._replay_observation(observation)
            self.pauses.acting()
            observation, reward, terminated, truncated, info = self.env.step(action)
            self.pauses.observed()
            outcome = operator_outcome(reward, terminated, truncated, info)
            terminated, truncated = outcome.terminated, outcome.truncated or outcome.rerecord
            executed, intervened = info["executed_action"], bool(info[INFO_INTERVENTION])
            steps.append({"observation": replay_observation, "action": executed,
                          "reward": outcome.reward, "discount": 0.0 if terminated else 1.0, "mc_return": 0.0,
                          "intervention": intervened})
            self.writer.append(steps[-1])
            builder.add(executed, outcome.reward, observation, terminated=terminated, intervention=intervened,
                        policy_version=self.version)
            self.steps_done += 1
            self.intervention_steps += intervened
            self._report_stats()
            self._refresh_params()  # new parameters apply from the next step on
            action = self.policy.act(observation)  # also embeds the new observation
            if terminated or truncated or self.stop.is_set():
                break
        self.writer.append({"observation": self._replay_observation(observation),
                            "action": np.zeros(self.spec.action_dim, np.float32), "reward": 0.0,
                            "discount": 0.0 if terminated else 1.0, "mc_return": 0.0, "intervention": False})
        self.writer.end_episode()
        success = outcome.success
        if not outcome.rerecord:  # (its steps already reached replay; only the RLDS record is dropped)
            write_raw_episode(path, builder.finish(success=success), self.spec)
        if success:
            self.probe.add_episode(steps)
        self.episodes += 1
        self._report_stats()
        self.record.add_episode(EpisodeStats(
            index=self.record.episodes_before + self.episodes, length=builder.num_transitions, success=success,
            intervention_steps=int(info.get("intervention_steps", 0)),
            intervention_segments=int(info.get("intervention_segments", 0)), policy_version=self.version,
            env_steps_total=self.total_steps, elapsed_s=self.record.elapsed()))

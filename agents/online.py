"""HIL-ConRFT, the online stage: an actor and a learner meeting at a Reverb server.

The actor thread drives the robot with the current policy while a human device (the scripted
intervener on the simulator) may take over at any step; it streams every step into the `online`
Reverb table as it happens (human-intervention transitions also into `demo`), writes every
episode as a raw RLDS episode file (source "online", with the intervention flags and the
parameter version that acted), and applies new parameters at step boundaries. The learner (the
calling thread) samples 50/50 online/demo batches, paced by the online table's
SampleToInsertRatio limiter (the update-to-data ratio), and publishes the actor head with a
version number every `publish_every` learner steps through the server's `params` table.

Roles: `both` (actor thread + learner in one process), `learner` (serves replay and parameters
on a port) and `actor` (reaches that server by address). Ctrl-C/SIGTERM finish the actor's
episode and save the learner and Reverb checkpoints; the same command resumes. If the learner
dies (even `kill -9`), a remote actor acts on with its last parameters, journals its steps and,
once the restarted learner serves again, re-sends every step not in the restored replay
checkpoint (`datasets/replay/reliable.py`).

The actor also runs periodic evaluations (deterministic policy, no human) every `eval_every`
env steps; episodes and evaluations go to TensorBoard (`online/`, `online_eval/` at env steps),
to JSON lines in the workdir (`online_log.py`), and to PNG charts in `<workdir>/report`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import numpy as np

from vlarft.agents.online_log import EpisodeStats, EvalPoint, OnlineRecord
from vlarft.agents.parameters import ReverbParameterStore
from vlarft.datasets.episode_builder import EpisodeBuilder
from vlarft.datasets.raw_episodes import next_episode_path, recorded_transitions, write_raw_episode
from vlarft.datasets.schema import EpisodeSpec
from vlarft.robot_io.contract import INFO_INTERVENTION
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
    to value. `run_online` reports the critic's mean Q on them before and after online learning."""

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
    waits on the network: a dead server stalls this thread, not the robot."""

    def __init__(self, store: ReverbParameterStore, client: Callable[[], Any], stop: threading.Event,
                 period_s: float = 0.1):
        super().__init__(name="parameter-poller", daemon=True)
        self.store, self.client, self.stop, self.period_s = store, client, stop, period_s
        self.latest = None

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.store.client = self.client()
                self.latest = self.store.latest() or self.latest
            except Exception:  # noqa: BLE001 - the server is away; the writer reconnects
                pass
            self.stop.wait(self.period_s)


class OnlineActor(threading.Thread):
    """Runs online episodes until `env_steps` steps are done or `stop` is set.

    `writer` is a `ReliableWriter`: when the replay server dies the actor acts on with its last
    parameters and journals the steps until the server is back.
    """

    def __init__(self, *, make_env: Callable[[], Any], policy, writer, store: ReverbParameterStore, episode_dir: str,
                 spec: EpisodeSpec, env_steps: int, steps_before: int, seed: int, record: OnlineRecord,
                 stop: threading.Event, evaluation: PeriodicEvaluation | None = None, actor_index: int = 0,
                 operator: str = "scripted_intervention", wait_durable: bool = False):
        super().__init__(name="online-actor", daemon=True)
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
        self.probe = SuccessProbe()
        self.next_eval = evaluation.first_due(steps_before) if evaluation else None
        self.error: BaseException | None = None

    @property
    def total_steps(self) -> int:
        return self.steps_before + self.steps_done

    def run(self) -> None:
        try:
            self.env = self.make_env()
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
        from vlarft.datasets.replay import ReplayError

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
        published = self.poller.latest
        return (published is not None and published.incarnation == self.writer.incarnation
                and published.durable_for(self.actor_index) >= self.writer.records)

    def _refresh_params(self) -> None:
        """Adopts newer parameters (or a restarted learner's), trims the replay journal, and
        re-sends what a restarted learner's replay lacks."""
        published = self.poller.latest
        if published is None or published is self._seen:
            return
        self._seen = published
        restarted = self.incarnation is not None and published.incarnation != self.incarnation
        self.writer.incarnation = published.incarnation  # progress from now on is for this learner
        if restarted and self.writer.reconnects == self._reconnects_seen:
            self.writer.resync()  # the writer did not notice the restart itself
        self._reconnects_seen = self.writer.reconnects
        self.writer.trim(published.durable_for(self.actor_index))
        if published.incarnation != self.incarnation or published.version > self.version:
            self.policy.set_params(head_params=published.params)
            self.version, self.incarnation = published.version, published.incarnation

    def _maybe_evaluate(self) -> None:
        from vlarft.agents.evaluation import run_episodes

        if self.next_eval is None or self.total_steps < self.next_eval or self.stop.is_set():
            return
        evaluation = self.evaluation
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
        self.policy.reset()
        builder.start(observation)
        action = self.policy.act(observation)
        steps = []
        while True:
            embedding, state = self.policy.last_embedding, observation["state"]
            observation, reward, terminated, truncated, info = self.env.step(action)
            outcome = operator_outcome(reward, terminated, truncated, info)
            terminated, truncated = outcome.terminated, outcome.truncated or outcome.rerecord
            executed, intervened = info["executed_action"], bool(info[INFO_INTERVENTION])
            steps.append({"observation": {"embedding": embedding, "state": state}, "action": executed,
                          "reward": outcome.reward, "discount": 0.0 if terminated else 1.0, "mc_return": 0.0,
                          "intervention": intervened})
            self.writer.append(steps[-1])
            builder.add(executed, outcome.reward, observation, terminated=terminated, intervention=intervened,
                        policy_version=self.version)
            self.steps_done += 1
            self._refresh_params()  # new parameters apply from the next step on
            action = self.policy.act(observation)  # also embeds the new observation
            if terminated or truncated or self.stop.is_set():
                break
        self.writer.append({"observation": {"embedding": self.policy.last_embedding, "state": observation["state"]},
                            "action": np.zeros(self.spec.action_dim, np.float32), "reward": 0.0,
                            "discount": 0.0 if terminated else 1.0, "mc_return": 0.0, "intervention": False})
        self.writer.end_episode()
        success = outcome.success
        if not outcome.rerecord:  # (its steps already reached replay; only the RLDS record is dropped)
            write_raw_episode(path, builder.finish(success=success), self.spec)
        if success:
            self.probe.add_episode(steps)
        self.episodes += 1
        self.record.add_episode(EpisodeStats(
            index=self.record.episodes_before + self.episodes, length=builder.num_transitions, success=success,
            intervention_steps=int(info.get("intervention_steps", 0)),
            intervention_segments=int(info.get("intervention_segments", 0)), policy_version=self.version,
            env_steps_total=self.total_steps, elapsed_s=self.record.elapsed()))


@dataclasses.dataclass(frozen=True)
class OnlineSettings:
    """Knobs of the online stage.

    Attributes:
      env_steps: robot steps to collect.
      teleop: the human device (`scripted_intervention` on the simulator, `spacemouse`, ...).
      updates_per_env_step: learner updates each collected step pays for (the UTD ratio; the
        online table's rate limiter holds it).
      publish_every: learner steps between parameter publications to the actor.
      reset_optimizer: start the online stage with fresh Adam states (the reference code does).
      min_online: online transitions before learning starts.
      max_actor_lead: when > 0, the actor blocks once it is this many steps ahead of the
        learner's update-to-data budget (a strict UTD for simulators and tests); 0 = a robot
        never waits for the learner.
      eval_every: env steps between periodic evaluations by the actor (0 = none; also one at
        the start and one at the end).
      eval_episodes: episodes per periodic evaluation.
      role: "both" (actor thread + learner in one process), "learner" (serves replay and
        parameters on `replay_port`, learns until --steps or until every actor finished) or
        "actor" (acts on this machine, reaching the learner's server at `replay_address`).
      replay_address: HOST:PORT of the learner's replay server (role actor).
      replay_port: port the learner's replay server listens on (0 = any free one).
      actor_index: this actor's slot (0 .. max_actors - 1); every actor of a run needs its own.
      max_actors: actor slots the learner's server offers.
      retry_every_s: seconds between an actor's reconnection attempts to a dead replay server.
    """

    env_steps: int = 2000
    teleop: str = "scripted_intervention"
    updates_per_env_step: float = 1.0
    publish_every: int = 10
    reset_optimizer: bool = True
    min_online: int = 100
    max_actor_lead: int = 0
    eval_every: int = 0
    eval_episodes: int = 5
    role: str = "both"
    replay_address: str = ""
    replay_port: int = 0
    actor_index: int = 0
    max_actors: int = 8
    retry_every_s: float = 2.0


def run_online(options, config, loss, settings: OnlineSettings) -> dict:
    """HIL-ConRFT from an offline (Cal-ConRFT) workdir; returns the final evaluation + online figures."""
    import jax

    from vlarft.agents import training
    from vlarft.agents.builder import ConRFTBuilder
    from vlarft.agents.checkpointing import Checkpointer, interrupts_deferred
    from vlarft.agents.config import config_to_json
    from vlarft.agents.export import export_policy, load_policy_export
    from vlarft.agents.metrics_log import TrainingLog
    from vlarft.agents.plots import online_report
    from vlarft.datasets.reader import dataset_spec
    from vlarft.datasets.replay.reliable import read_progress

    start = time.time()
    if not options.init_from:
        raise training.ConfigMismatchError("--stage=online needs --init_from=OFFLINE_WORKDIR (a Cal-ConRFT run)")
    export = load_policy_export(options.init_from)
    if export.meta.get("stage") != "offline":
        raise training.ConfigMismatchError(f"{options.init_from} holds a {export.meta.get('stage')!r} policy; "
                                           f"--init_from must be an offline (Cal-ConRFT) workdir")
    if not 0 <= settings.actor_index < settings.max_actors:
        raise ValueError(f"--actor_index={settings.actor_index} outside 0..{settings.max_actors - 1}")
    if settings.role == "actor":
        return _run_actor_role(options, config, loss, settings, export, start)
    dataset_dir = options.dataset_dir or export.meta["dataset_dir"]
    spec = dataset_spec(dataset_dir)
    options = dataclasses.replace(options, dataset_dir=dataset_dir)
    training.check_dataset(spec, options, {**export.meta["spec"], "source": "the offline policy"})
    checkpointer, resumed = training.open_checkpointer(options, config, "online")
    builder = ConRFTBuilder(config, loss, spec, export, _replay_plan(settings))
    server = builder.make_replay_server(checkpoint_dir=str(Path(options.workdir) / "replay"), port=settings.replay_port)
    if settings.role == "learner":
        (Path(options.workdir) / "replay_address").write_text(server.address)
        print(f"replay server at {server.address} (actors: --role=actor --replay_address=HOST:{server.port})",
              file=sys.stderr, flush=True)
    record = OnlineRecord(options.workdir)
    stop = threading.Event()
    log = TrainingLog(options.workdir, settings.env_steps, 0, "online env steps", options.show_progress)
    try:
        if _table_size(server, builder.replay_config().demo_table) == 0:  # else restored from a replay checkpoint
            builder.load_demos(server, dataset_dir, options.show_progress)
        learner = builder.make_learner()
        demo_only = builder.make_iterator(server.address, demo_only=True)
        state = learner.init(jax.random.PRNGKey(config.train.seed), next(demo_only))
        demo_only.close()
        offline = Checkpointer(Path(options.init_from) / "checkpoints")
        offline_state, _ = offline.restore(state)
        offline.close()
        if resumed:
            state, _ = checkpointer.restore(state)
        else:
            state = learner.reset_optimizers(offline_state) if settings.reset_optimizer else offline_state
        first_step = int(state.step)
        store = ReverbParameterStore(server.client, state.head_params, settings.max_actors)
        restored = store.latest()  # a restored replay checkpoint: keep its durable watermarks
        if restored is not None:
            store.durable = restored.durable
        store.publish(state.head_params, first_step)
        actor = None
        if settings.role == "both":
            actor = make_actor(options, config, settings, builder, spec, server.address, server.client,
                               record, stop, first_step, training.eval_env_factory(options, spec))
        meta = {**export.meta, "stage": "online", "config": config_to_json(config), "loss": dataclasses.asdict(loss),
                "online": dataclasses.asdict(settings), "offline_from": os.path.abspath(options.init_from)}

        def save(s):
            """Reads the actors' progress, checkpoints learner and replay, then publishes the
            progress as durable watermarks (an actor trims its journal only to a finished checkpoint)."""
            with interrupts_deferred():  # a signal now would leave the checkpoints out of step
                progress = read_progress(server.client, settings.max_actors)
                durable = np.array([p.acknowledged if p and p.incarnation == store.incarnation else d
                                    for p, d in zip(progress, store.durable)], np.int64)
                checkpointer.save(int(s.step), s, meta)
                server.checkpoint()
                store.durable = durable
                store.publish(s.head_params, int(s.step))
                record.drain(log)

        def actors_finished() -> bool:
            progress = [p for p in read_progress(server.client, settings.max_actors) if p is not None]
            return bool(progress) and all(p.finished and p.incarnation == store.incarnation for p in progress)

        if actor is not None:
            actor.start()
        loop = LearnerLoop(learner, state, builder, server.address, store, settings, save, log, record,
                           done=stop.is_set if actor else actors_finished,
                           max_steps=None if actor else options.steps,
                           progress=(lambda: actor.total_steps) if actor else (lambda: int(loop.state.step)))
        try:
            state = loop.run()
        except KeyboardInterrupt:  # Ctrl-C / SIGTERM: the actor ends its episode (written), then save all
            stop.set()
            if actor is not None:
                actor.join()
            save(loop.state)
            raise
        if actor is not None:
            actor.join()
            if actor.error is not None:
                raise actor.error
        save(state)
        if settings.role == "learner":
            time.sleep(1.0)  # remote actors wait to see their final durable watermark before exiting
        final = training.robot_evaluation(builder.make_policy(state.head_params), options, config, spec, int(state.step))
        export_policy(options.workdir, export.backbone_params, state.head_params,
                      {**meta, "cameras": list(export.cameras), "learner_step": int(state.step)})
        replay_sizes = {name: _table_size(server, name) for name in (builder.replay_config().online_table,
                                                                     builder.replay_config().demo_table)}
        extra = {}
        if actor is not None:
            extra = {"replay_items_written": actor.writer.items_written,
                     **_success_q(learner, offline_state, state, actor.probe)}
    finally:
        stop.set()
        log.close()
        server.stop()
        checkpointer.close()
    reports = online_report(options.workdir, Path(options.workdir) / "report")
    return {**final, **record.summary(), **extra, "replay_sizes": replay_sizes,
            "learner_steps": int(state.step) - first_step, "role": settings.role, "report": reports,
            "wall_s": time.time() - start, "online_minutes": (time.time() - start) / 60}


def _replay_plan(settings: OnlineSettings):
    from vlarft.agents.builder import ReplayPlan

    return ReplayPlan(online_fraction=0.5, updates_per_env_step=settings.updates_per_env_step,
                      min_online=settings.min_online, max_actor_lead=settings.max_actor_lead,
                      max_actors=settings.max_actors)


def _success_q(learner, offline_state, state, probe: SuccessProbe) -> dict:
    """Mean Q of the successful online episodes' transitions: offline critic vs online critic."""
    batch = probe.batch()
    if batch is None:
        return {}
    observation, actions = batch
    return {"q_success_steps_offline": learner.q_value(offline_state.critic_params, observation, actions),
            "q_success_steps_online": learner.q_value(state.critic_params, observation, actions),
            "q_success_probe_steps": len(actions)}


def _table_size(server, table: str) -> int:
    return server.client.server_info()[table].current_size


class LearnerLoop:
    """Updates while the actor collects; publishes parameters, logs episodes, checkpoints.

    `state` always holds the newest learner state, so an interruption can save it.
    """

    def __init__(self, learner, state, builder, address, store, settings, save, log, record: OnlineRecord, *,
                 done: Callable[[], bool], max_steps: int | None, progress: Callable[[], int]):
        self.learner, self.state, self.builder, self.address = learner, state, builder, address
        self.store, self.settings, self.save, self.log, self.record = store, settings, save, log, record
        self.done, self.max_steps, self.progress = done, max_steps, progress

    def run(self) -> Any:
        import jax

        from vlarft.agents.metrics_log import check_finite

        batches, train = None, self.learner.config.train
        try:
            while self.max_steps is None or int(self.state.step) < self.max_steps:
                self.record.drain(self.log)
                if batches is None:
                    batches = self.builder.make_iterator(self.address, rate_limiter_timeout_ms=1000)
                try:
                    new_state, metrics = self.learner.step(self.state, batches)
                except StopIteration:  # the rate limiter held us back for a while
                    batches.close()
                    batches = None
                    if self.done():
                        return self.state
                    continue
                metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
                check_finite(metrics, int(new_state.step))
                self.state = new_state
                step = int(new_state.step)
                if step % self.settings.publish_every == 0:
                    self.store.publish(new_state.head_params, step)
                if step % train.log_every == 0:
                    self.log.scalars(step, metrics, prefix="train/")
                if step % train.checkpoint_every == 0:
                    self.save(new_state)
                self.log.progress(self.progress(), metrics)
            return self.state
        finally:
            if batches is not None:
                batches.close()


def make_actor(options, config, settings, builder, spec, address, client, record, stop, first_step,
               env_factory) -> OnlineActor:
    """The online actor: env + human device behind the intervention wrapper, policy, reliable
    replay writer, parameter store and periodic evaluation."""
    from vlarft.datasets.replay.reliable import ReliableWriter
    from vlarft.robot_io.intervention import InterventionWrapper
    from vlarft.robot_io.teleop import make_device_for

    def make_actor_env():
        base_env = env_factory()
        return InterventionWrapper(base_env, make_device_for(settings.teleop, base_env, config.train.seed))

    store = ReverbParameterStore(client, builder.export.head_params, settings.max_actors)  # the actor's reader

    def watermark(new_client) -> int | None:
        published = ReverbParameterStore(new_client, builder.export.head_params, settings.max_actors).latest()
        return None if published is None else published.durable_for(settings.actor_index)

    if env_factory is None:
        from vlarft.agents.training import ConfigMismatchError

        raise ConfigMismatchError("the online actor needs a robot: pass --env (e.g. --env=franka:<task>); only "
                                  "simulator datasets imply their environment")
    episode_dir = Path(options.workdir) / "episodes"
    episode_dir.mkdir(parents=True, exist_ok=True)
    done_before = recorded_transitions(episode_dir)  # a resumed run continues its env-step budget
    raw_spec = dataclasses.replace(spec, embedding_dim=0, with_mc_return=False)  # what the robot records
    policy = builder.make_policy(deterministic=False, seed=config.train.seed)
    policy.version = int(builder.export.meta.get("learner_step", -1))  # the export's parameters
    evaluation = None
    if settings.eval_every > 0 and settings.eval_episodes > 0:
        evaluation = PeriodicEvaluation(policy=builder.make_policy(deterministic=True), every=settings.eval_every,
                                        episodes=settings.eval_episodes, seed=config.train.seed + 90_000,
                                        video_dir=os.path.join(options.workdir, "videos"))
    writer = ReliableWriter(address, builder.make_transition_writer, actor_index=settings.actor_index,
                            watermark=watermark, client=client, retry_every_s=settings.retry_every_s,
                            stop=stop.is_set)
    return OnlineActor(make_env=make_actor_env, policy=policy, writer=writer, store=store,
                       episode_dir=str(episode_dir), spec=raw_spec, env_steps=max(0, settings.env_steps - done_before),
                       steps_before=done_before, seed=config.train.seed + 50_000 + first_step + done_before,
                       record=record, stop=stop, evaluation=evaluation, actor_index=settings.actor_index,
                       operator=settings.teleop, wait_durable=settings.role == "actor")


def _run_actor_role(options, config, loss, settings, export, start) -> dict:
    """Acts on this machine against a learner's replay server at `settings.replay_address`."""
    from vlarft.agents import training
    from vlarft.agents.builder import ConRFTBuilder
    from vlarft.agents.metrics_log import TrainingLog
    from vlarft.agents.plots import online_report
    from vlarft.datasets.replay import connect
    from vlarft.datasets.schema import EpisodeSpec

    if not settings.replay_address:
        raise training.ConfigMismatchError("--role=actor needs --replay_address=HOST:PORT of the learner")
    meta_spec = export.meta["spec"]
    spec = EpisodeSpec(cameras={c: tuple(hw) for c, hw in meta_spec["cameras"].items()}, state_dim=meta_spec["state_dim"],
                       action_dim=meta_spec["action_dim"], embedding_dim=export.config.backbone.width)
    if not options.env:
        options = dataclasses.replace(options, env=f"sim:{export.meta['task']}")
    client = connect(settings.replay_address, timeout_s=60.0)
    builder = ConRFTBuilder(config, loss, spec, export, _replay_plan(settings))
    record = OnlineRecord(options.workdir)
    stop = threading.Event()
    actor = make_actor(options, config, settings, builder, spec, settings.replay_address, client, record, stop, 0,
                       training.eval_env_factory(options, spec))
    log = TrainingLog(options.workdir, settings.env_steps, actor.steps_before, "online env steps", options.show_progress)
    actor.start()
    try:
        while actor.is_alive():
            actor.join(timeout=0.5)
            record.drain(log)
            log.progress(actor.total_steps, {})
    except KeyboardInterrupt:
        stop.set()
        actor.join()
        raise
    finally:
        record.drain(log)
        log.close()
    if actor.error is not None:
        raise actor.error
    writer = actor.writer
    return {**record.summary(), "replay_items_written": writer.items_written, "role": "actor",
            "actor_index": settings.actor_index, "transitions": actor.steps_done, "records_sent": writer.records,
            "resent": writer.resent, "reconnects": writer.reconnects, "journal_dropped": writer.dropped,
            "policy_versions": sorted({e.policy_version for e in record.episodes}),
            "report": online_report(options.workdir, Path(options.workdir) / "report"),
            "wall_s": time.time() - start}

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
episode and save the learner and Reverb checkpoints; the same command resumes.
Not yet: the actor reconnecting after the learner dies, periodic evaluation while learning.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import numpy as np

from vlarft.agents.parameters import ReverbParameterStore
from vlarft.datasets.episode_builder import EpisodeBuilder
from vlarft.datasets.raw_episodes import next_episode_path, recorded_transitions, write_raw_episode
from vlarft.datasets.schema import EpisodeSpec
from vlarft.robot_io.contract import INFO_INTERVENTION
from vlarft.robot_io.intervention import operator_outcome


@dataclasses.dataclass
class EpisodeStats:
    """What the actor reports per online episode."""

    index: int
    length: int
    success: bool
    intervention_steps: int
    intervention_segments: int
    policy_version: int
    env_steps_total: int
    wall_time: float

    @property
    def intervention_rate(self) -> float:
        return self.intervention_steps / max(self.length, 1)


class OnlineActor(threading.Thread):
    """Runs online episodes until `env_steps` steps are done or `stop` is set."""

    def __init__(self, *, make_env: Callable[[], Any], policy, writer, store: ReverbParameterStore, episode_dir: str,
                 spec: EpisodeSpec, env_steps: int, seed: int, on_episode: Callable[[EpisodeStats], None],
                 stop: threading.Event):
        super().__init__(name="online-actor", daemon=True)
        self.make_env, self.env = make_env, None  # built in the actor's thread: its GL context lives there
        self.policy, self.writer, self.store = policy, writer, store
        self.episode_dir, self.spec, self.env_steps, self.seed = episode_dir, spec, env_steps, seed
        self.on_episode, self.stop = on_episode, stop
        self.version = int(getattr(policy, "version", -1))  # the parameters it starts with
        self.steps_done, self.episodes = 0, 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.env = self.make_env()
            while self.steps_done < self.env_steps and not self.stop.is_set():
                self._episode()
        except BaseException as e:  # surfaced by the learner thread
            self.error = e
        finally:
            self.stop.set()
            if self.env is not None:
                self.env.close()

    def _refresh_params(self) -> None:
        params, version = self.store.latest()
        if version > self.version:
            self.policy.set_params(head_params=params)
            self.version = version

    def _episode(self) -> None:
        robot = self.env.unwrapped.robot_spec
        path = next_episode_path(self.episode_dir, f"online_{robot.task}")
        builder = EpisodeBuilder(self.spec, episode_id=f"{robot.task}-online-{uuid.uuid4().hex[:12]}", task=robot.task,
                                 instruction=robot.instruction, source="online", robot=robot.robot,
                                 operator="scripted_intervention", file_path=str(path))
        self._refresh_params()
        observation, info = self.env.reset(seed=self.seed + self.episodes)
        self.policy.reset()
        builder.start(observation)
        action = self.policy.act(observation)
        while True:
            embedding, state = self.policy.last_embedding, observation["state"]
            observation, reward, terminated, truncated, info = self.env.step(action)
            outcome = operator_outcome(reward, terminated, truncated, info)
            terminated, truncated = outcome.terminated, outcome.truncated or outcome.rerecord
            executed, intervened = info["executed_action"], bool(info[INFO_INTERVENTION])
            self.writer.append({"observation": {"embedding": embedding, "state": state}, "action": executed,
                                "reward": outcome.reward, "discount": 0.0 if terminated else 1.0, "mc_return": 0.0,
                                "intervention": intervened})
            self.writer.flush()
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
        self.episodes += 1
        self.on_episode(EpisodeStats(index=self.episodes, length=builder.num_transitions, success=success,
                                     intervention_steps=int(info.get("intervention_steps", 0)),
                                     intervention_segments=int(info.get("intervention_segments", 0)),
                                     policy_version=self.version, env_steps_total=self.steps_done,
                                     wall_time=time.time()))


def summarize_episodes(episodes: list[EpisodeStats]) -> dict:
    """Totals over the online episodes of a run."""
    steps = sum(e.length for e in episodes)
    return {
        "online_episodes": len(episodes),
        "online_success_rate": float(np.mean([e.success for e in episodes])) if episodes else float("nan"),
        "intervention_rate": sum(e.intervention_steps for e in episodes) / steps if steps else 0.0,
        "interventions": sum(e.intervention_segments for e in episodes),
        "env_steps": steps,
    }


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
      role: "both" (actor thread + learner in one process), "learner" (serves replay and
        parameters on `replay_port`, learns until --steps) or "actor" (acts on this machine,
        reaching the learner's server at `replay_address`).
      replay_address: HOST:PORT of the learner's replay server (role actor).
      replay_port: port the learner's replay server listens on (0 = any free one).
    """

    env_steps: int = 2000
    teleop: str = "scripted_intervention"
    updates_per_env_step: float = 1.0
    publish_every: int = 10
    reset_optimizer: bool = True
    min_online: int = 100
    max_actor_lead: int = 0
    role: str = "both"
    replay_address: str = ""
    replay_port: int = 0


def run_online(options, config, loss, settings: OnlineSettings) -> dict:
    """HIL-ConRFT from an offline (Cal-ConRFT) workdir; returns the final evaluation + online figures."""
    import jax

    from vlarft.agents import training
    from vlarft.agents.builder import ConRFTBuilder, ReplayPlan
    from vlarft.agents.checkpointing import Checkpointer
    from vlarft.agents.config import config_to_json
    from vlarft.agents.export import export_policy, load_policy_export
    from vlarft.agents.metrics_log import TrainingLog
    from vlarft.datasets.reader import dataset_spec
    start = time.time()
    if not options.init_from:
        raise training.ConfigMismatchError("--stage=online needs --init_from=OFFLINE_WORKDIR (a Cal-ConRFT run)")
    export = load_policy_export(options.init_from)
    if export.meta.get("stage") != "offline":
        raise training.ConfigMismatchError(f"{options.init_from} holds a {export.meta.get('stage')!r} policy; "
                                           f"--init_from must be an offline (Cal-ConRFT) workdir")
    if settings.role == "actor":
        return _run_actor_role(options, config, loss, settings, export, start)
    dataset_dir = options.dataset_dir or export.meta["dataset_dir"]
    spec = dataset_spec(dataset_dir)
    options = dataclasses.replace(options, dataset_dir=dataset_dir)
    training.check_dataset(spec, options, {**export.meta["spec"], "source": "the offline policy"})
    checkpointer, resumed = training.open_checkpointer(options, config, "online")
    builder = ConRFTBuilder(config, loss, spec, export, ReplayPlan(online_fraction=0.5,
                            updates_per_env_step=settings.updates_per_env_step, min_online=settings.min_online,
                            max_actor_lead=settings.max_actor_lead))
    server = builder.make_replay_server(checkpoint_dir=str(Path(options.workdir) / "replay"), port=settings.replay_port)
    if settings.role == "learner":
        (Path(options.workdir) / "replay_address").write_text(server.address)
        print(f"replay server at {server.address} (actors: --role=actor --replay_address=HOST:{server.port})",
              file=sys.stderr, flush=True)
    episodes: list[EpisodeStats] = []
    stop = threading.Event()
    log = TrainingLog(options.workdir, settings.env_steps, 0, "online env steps", options.show_progress)
    try:
        if _table_size(server, builder.replay_config().demo_table) == 0:  # else restored from a replay checkpoint
            builder.load_demos(server, dataset_dir, options.show_progress)
        learner = builder.make_learner()
        demo_only = builder.make_iterator(server.address, demo_only=True)
        state = learner.init(jax.random.PRNGKey(config.train.seed), next(demo_only))
        demo_only.close()
        if resumed:
            state, _ = checkpointer.restore(state)
        else:
            offline = Checkpointer(Path(options.init_from) / "checkpoints")
            state, _ = offline.restore(state)
            offline.close()
            state = learner.reset_optimizers(state) if settings.reset_optimizer else state
        first_step = int(state.step)
        store = ReverbParameterStore(server.client, state.head_params)
        store.publish(state.head_params, first_step)
        env_factory = training.eval_env_factory(options, spec)
        writer = builder.make_transition_writer(server.client)
        actor = None
        if settings.role == "both":
            actor = make_actor(options, config, settings, builder, spec, server.client, store, writer,
                               episodes, stop, first_step, env_factory)
        meta = {**export.meta, "stage": "online", "config": config_to_json(config), "loss": dataclasses.asdict(loss),
                "online": dataclasses.asdict(settings), "offline_from": os.path.abspath(options.init_from)}
        if actor is not None:
            actor.start()
        save = lambda s: (checkpointer.save(int(s.step), s, meta), server.checkpoint())
        loop = LearnerLoop(learner, state, builder, server.address, store, settings, save, log, episodes,
                           done=stop.is_set if actor else lambda: False,
                           max_steps=None if actor else options.steps,
                           progress=(lambda: actor.steps_done) if actor else (lambda: int(loop.state.step)))
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
        final = training.robot_evaluation(builder.make_policy(state.head_params), options, config, spec, int(state.step))
        export_policy(options.workdir, export.backbone_params, state.head_params,
                      {**meta, "cameras": list(export.cameras), "learner_step": int(state.step)})
    finally:
        stop.set()
        log.close()
        server.stop()
        checkpointer.close()
    return {**final, **summarize_episodes(episodes), "replay_items_written": dict(writer.items_written),
            "learner_steps": int(state.step) - first_step, "role": settings.role,
            "wall_s": time.time() - start, "online_minutes": (time.time() - start) / 60}


def _table_size(server, table: str) -> int:
    return server.client.server_info()[table].current_size


class LearnerLoop:
    """Updates while the actor collects; publishes parameters, logs episodes, checkpoints.

    `state` always holds the newest learner state, so an interruption can save it.
    """

    def __init__(self, learner, state, builder, address, store, settings, save, log, episodes, *,
                 done: Callable[[], bool], max_steps: int | None, progress: Callable[[], int]):
        self.learner, self.state, self.builder, self.address = learner, state, builder, address
        self.store, self.settings, self.save, self.log, self.episodes = store, settings, save, log, episodes
        self.done, self.max_steps, self.progress = done, max_steps, progress

    def run(self) -> Any:
        import jax

        from vlarft.agents.metrics_log import check_finite

        logged, batches, train = 0, None, self.learner.config.train
        try:
            while self.max_steps is None or int(self.state.step) < self.max_steps:
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
                for stats in self.episodes[logged:]:
                    self.log.scalars(stats.env_steps_total, {"success": float(stats.success), "length": stats.length,
                                                             "intervention_rate": stats.intervention_rate,
                                                             "policy_version": stats.policy_version}, prefix="online/")
                    logged += 1
                self.log.progress(self.progress(), metrics)
            return self.state
        finally:
            if batches is not None:
                batches.close()


def make_actor(options, config, settings, builder, spec, client, store, writer, episodes, stop, first_step,
               env_factory) -> OnlineActor:
    """The online actor: env + human device behind the intervention wrapper, policy, writer, store."""
    from vlarft.robot_io.intervention import InterventionWrapper
    from vlarft.robot_io.teleop import make_device_for

    def make_actor_env():
        base_env = env_factory()
        return InterventionWrapper(base_env, make_device_for(settings.teleop, base_env, config.train.seed))

    episode_dir = Path(options.workdir) / "episodes"
    episode_dir.mkdir(parents=True, exist_ok=True)
    done_before = recorded_transitions(episode_dir)  # a resumed run continues its env-step budget
    raw_spec = dataclasses.replace(spec, embedding_dim=0, with_mc_return=False)  # what the robot records
    policy = builder.make_policy(deterministic=False, seed=config.train.seed)
    policy.version = int(builder.export.meta.get("learner_step", -1))  # the export's parameters
    return OnlineActor(make_env=make_actor_env, policy=policy,
                       writer=writer, store=store, episode_dir=str(episode_dir), spec=raw_spec,
                       env_steps=max(0, settings.env_steps - done_before),
                       seed=config.train.seed + 50_000 + first_step + done_before, on_episode=episodes.append, stop=stop)


def _run_actor_role(options, config, loss, settings, export, start) -> dict:
    """Acts on this machine against a learner's replay server at `settings.replay_address`."""
    from vlarft.agents import training
    from vlarft.agents.builder import ConRFTBuilder, ReplayPlan
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
    builder = ConRFTBuilder(config, loss, spec, export, ReplayPlan(online_fraction=0.5))
    store = ReverbParameterStore(client, export.head_params)
    episodes: list[EpisodeStats] = []
    stop = threading.Event()
    writer = builder.make_transition_writer(client)
    actor = make_actor(options, config, settings, builder, spec, client, store, writer, episodes, stop, 0,
                       training.eval_env_factory(options, spec))
    actor.start()
    try:
        while actor.is_alive():
            actor.join(timeout=0.5)
    except KeyboardInterrupt:
        stop.set()
        actor.join()
        raise
    if actor.error is not None:
        raise actor.error
    versions = sorted({e.policy_version for e in episodes})
    return {**summarize_episodes(episodes), "replay_items_written": dict(writer.items_written), "role": "actor",
            "policy_versions": versions, "wall_s": time.time() - start}

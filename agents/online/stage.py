"""`run_online`: the online stage's wiring for the roles `both`, `learner` and `actor`.

`both` (default): one process serves replay + parameters, runs the actor thread and learns.
`learner`: serves replay + parameters on `--replay_port` (required: the port is reachable from
the network; writes `<workdir>/replay_address` and the parameter secret `<workdir>/params_secret`),
learns until every actor has finished. `actor`: acts on this machine against the learner's
server at `--replay_address`, verifying its parameters with `--params_secret_file`.
Ctrl-C/SIGTERM: the actor finishes its episode (written), the learner saves its checkpoint and a
Reverb checkpoint; the same command resumes both and the env-step budget.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time
from pathlib import Path

import jax

from vlarft.agents import stage_gate, training
from vlarft.agents.builder import ConRFTBuilder
from vlarft.agents.config import AgentConfig, LossConfig, config_to_json
from vlarft.agents.export import PolicyExport, export_policy, load_policy_export
from vlarft.agents.metrics_log import TrainingLog
from vlarft.agents.online.actor import OnlineActor, PeriodicEvaluation, SuccessProbe
from vlarft.agents.online.learner_loop import LearnerLoop
from vlarft.agents.online.watermarks import DurableSaver
from vlarft.agents.online_log import OnlineRecord
from vlarft.agents.parameters import ReverbParameterStore, UntrustedPublication, learner_secret, read_secret
from vlarft.agents.plots import online_report
from vlarft.agents.registry import agent_builder
from vlarft.datasets.raw_episodes import recorded_transitions
from vlarft.datasets.reader import dataset_spec
from vlarft.datasets.replay import connect
from vlarft.datasets.replay.reliable import ReliableWriter, read_progress
from vlarft.datasets.replay.slots import SlotClaim, slot_count
from vlarft.datasets.replay.tables import exposure_notice
from vlarft.datasets.schema import EpisodeSpec
from vlarft.robot_io.intervention import InterventionWrapper
from vlarft.robot_io.teleop import make_device_for


def run_online(options: training.StageOptions, config: AgentConfig, loss: LossConfig) -> dict:
    """HIL-ConRFT from an offline (Cal-ConRFT) workdir with `config.online`, or the agent
    `config.online.agent` names (`agents/registry.py`) from the workdir it starts from; returns
    the final evaluation + online figures."""
    start = time.time()
    online = config.online
    if online.role == "learner" and not online.replay_port:
        raise ValueError("--role=learner serves replay and parameters to other machines: choose the port with "
                         "--replay_port=P (see WORKSPACE.md, 'Threat model and guarantees')")
    if online.role == "actor" and not online.params_secret_file:
        raise ValueError("--role=actor needs --params_secret_file=FILE: a copy (mode 0600) of the learner's "
                         "<workdir>/params_secret, which authenticates the parameters it publishes")
    builder_class = agent_builder(online.agent)
    stages = " or ".join(builder_class.init_stages)
    if not options.init_from:
        raise training.ConfigMismatchError(f"--stage=online --agent={online.agent} needs --init_from=WORKDIR "
                                           f"(a run of the {stages} stage)")
    export = load_policy_export(options.init_from)
    if export.meta.get("stage") not in builder_class.init_stages:
        raise training.ConfigMismatchError(f"{options.init_from} holds a {export.meta.get('stage')!r} policy; "
                                           f"--agent={online.agent} starts from a workdir of the {stages} stage "
                                           f"(--init_from)")
    config = training.with_backbone_of(config, export)
    if online.max_actors < 1:
        raise ValueError(f"--actor_slots={online.max_actors}: a learner needs at least one actor slot")
    if online.role == "actor":  # its slot is checked against the learner's --actor_slots
        return _run_actor_role(options, config, loss, export, start)
    if not 0 <= online.actor_index < online.max_actors:
        raise ValueError(f"--actor_index={online.actor_index} outside 0..{online.max_actors - 1}")
    return _run_learner_side(options, config, loss, export, start)


def _env_name(options: training.StageOptions, export: PolicyExport) -> str:
    """The robot the actors drive: --env, else the dataset's simulator task."""
    return options.env or f"sim:{export.meta['task']}"


def _run_learner_side(options, config: AgentConfig, loss: LossConfig, export: PolicyExport, start: float) -> dict:
    online = config.online
    from_offline = export.meta.get("stage") == "offline"
    if not (from_offline or options.dataset_dir):
        raise training.ConfigMismatchError(f"--agent={online.agent} from the {export.meta.get('stage')} run "
                                           f"{options.init_from} needs --dataset_dir=<its embedded dataset> "
                                           f"(pipelines/embed_dataset.py)")
    dataset_dir = options.dataset_dir or export.meta["dataset_dir"]
    spec = dataset_spec(dataset_dir)
    options = dataclasses.replace(options, dataset_dir=dataset_dir)
    training.check_dataset(spec, options, {**export.meta["spec"], "source": "the starting policy"})
    if not from_offline:
        training.check_embedding_backbone(dataset_dir, export, options.init_from)
    training.check_same_networks(config, export.config, f"the run {options.init_from}", critic=from_offline)
    checkpointer, resumed = training.open_checkpointer(options, config, "online")
    secret = learner_secret(options.workdir)  # signs the parameter publications
    builder = agent_builder(online.agent)(config, loss, spec, export, online=True,
                                          actor_lead=online.actor_lead(_env_name(options, export)))
    server = builder.make_replay_server(checkpoint_dir=str(Path(options.workdir) / "replay"), port=online.replay_port)
    if online.role == "learner":
        (Path(options.workdir) / "replay_address").write_text(server.address)
        print(f"replay server at {server.address} (actors: --role=actor --replay_address=HOST:{server.port} "
              f"--params_secret_file=<a copy of {Path(options.workdir) / 'params_secret'}>)\n"
              f"{exposure_notice(server.port)}", file=sys.stderr, flush=True)
    record = OnlineRecord(options.workdir)
    stop = threading.Event()
    log = TrainingLog(options.workdir, online.env_steps, 0, "online env steps", options.show_progress)
    batches = None
    try:
        if _table_size(server, builder.replay_config().demo_table) == 0:  # else restored from a replay checkpoint
            builder.load_demos(server, dataset_dir, options.show_progress)
        learner = builder.make_learner()
        demo_only = builder.make_iterator(server.address, demo_only=True)
        state = builder.parallel.replicate(learner.init(jax.random.PRNGKey(config.train.seed), next(demo_only)))
        demo_only.close()
        offline_state = builder.starting_state(learner, state, options.init_from)
        gate = {}
        if resumed:
            state, _ = checkpointer.restore(state)
        elif builder.runs_gate:
            gate = _check_offline_policy(options, config, learner, builder, export, offline_state, spec)
        if not resumed:
            state = learner.reset_optimizers(offline_state) if online.reset_optimizer else offline_state
            state = builder.parallel.replicate(state)
        first_step = int(state.step)
        store = ReverbParameterStore(server.client, state.head_params, online.max_actors, secret=secret)
        restored = _restored_publication(store)  # a restored replay checkpoint: keep its durable watermarks
        if restored is not None:
            store.durable = restored.durable
        store.publish(state.policy_params, first_step)
        meta = {**export.meta, "stage": "online", "agent": online.agent, "config": config_to_json(config),
                "loss": dataclasses.asdict(loss),
                "offline_from": os.path.abspath(options.init_from)}

        def checkpoint(s):
            checkpointer.save(int(s.step), s, meta)
            server.checkpoint()

        saver = DurableSaver(server.client, store, checkpoint, online.max_actors)

        def save(s):
            saver.save(s, s.policy_params, int(s.step))
            record.drain(log)

        actor = None
        if online.role == "both":
            actor = make_actor(options, config, builder, spec, server.address, server.client, record, stop,
                               first_step, training.eval_env_factory(options, spec), secret)
            actor.start()
        steps_per_dispatch = config.steps_per_dispatch()
        batches = builder.make_iterator(server.address, steps=steps_per_dispatch)
        loop = LearnerLoop(learner, state, batches, store, save, log, record,
                           done=stop.is_set if actor else _every(0.5, saver.actors_finished),
                           max_steps=None if actor else options.steps,
                           progress=(lambda: actor.total_steps) if actor else (lambda: int(loop.state.step)),
                           publish_every=online.publish_every, log_every=config.train.log_every,
                           checkpoint_every=config.train.checkpoint_every,
                           actor_from=(int(export.meta.get("learner_step", 0)) if from_offline else 0)
                           + config.train.critic_warmup_steps,
                           steps_per_dispatch=steps_per_dispatch)
        try:
            state = loop.run()
        except KeyboardInterrupt:  # Ctrl-C / SIGTERM: the actor ends its episode (written), then save all
            stop.set()
            if actor is not None:
                actor.join()
            save(loop.state)
            raise
        stop.set()
        if actor is not None:
            actor.join()
            if actor.error is not None:
                raise actor.error
        save(state)  # also the last publication: the final evaluation scores this version
        if online.role == "learner":
            time.sleep(1.0)  # remote actors wait to see their final durable watermark before exiting
        final = training.robot_evaluation(builder.make_policy(state.policy_params), options, config, spec,
                                          int(state.step))
        record.drain(log)
        record.write_final_evaluation(final, int(state.step), record.env_steps_total())
        export_policy(options.workdir, export.backbone_params, state.policy_params,
                      {**meta, "cameras": list(export.cameras), "learner_step": int(state.step)})
        replay = builder.replay_config()
        replay_sizes = {name: _table_size(server, name) for name in (replay.online_table, replay.demo_table)}
        extra = {"non_finite_dropped": batches.dropped_non_finite,
                 "actors": actor_figures(server.client, online.max_actors)}
        if actor is not None:
            extra = {**extra, "parameters_refused": actor.poller.rejected,
                     "replay_items_written": actor.writer.items_written, "env_steps_collected": actor.steps_done,
                     "control_pauses": actor.pauses.summary(),
                     **_success_q(learner, offline_state, state, actor.probe)}
    finally:
        stop.set()
        if batches is not None:
            batches.close()
        log.close()
        server.stop()
        checkpointer.close()
    reports = online_report(options.workdir, Path(options.workdir) / "report")
    for index, figures in extra["actors"].items():  # one line per actor on stderr; all figures in the JSON
        print(f"actor {index}: {figures.get('run_steps', '?')} env steps this run ({figures.get('env_steps', '?')} in "
              f"all), {figures.get('episodes', '?')} episodes, {figures.get('intervention_steps', '?')} intervention "
              f"steps, {figures.get('steps_per_s', float('nan')):.1f} steps/s, "
              f"{'finished' if figures['finished'] else 'not finished'}", file=sys.stderr, flush=True)
    if actor is not None:
        _print_control_pauses(extra["control_pauses"])
    updates = loop.updates * loss.critic_actor_ratio
    return {**final, **record.summary(), **extra, "gate": gate, "replay_sizes": replay_sizes,
            "policy_version": int(state.step),
            "learner_steps": loop.updates, "critic_updates": updates,
            "updates_per_env_step": updates / max(extra.get("env_steps_collected", 0), 1) if actor else None,
            "role": online.role, "report": reports, "wall_s": time.time() - start,
            "online_minutes": (time.time() - start) / 60}


def _check_offline_policy(options, config: AgentConfig, learner, builder: ConRFTBuilder, export: PolicyExport,
                          offline_state, spec: EpisodeSpec) -> dict:
    """The stage gate (`agents/stage_gate.py`) on the offline policy; returns its figures."""
    online = config.online
    if online.gate == "off":
        return {}
    sft = load_policy_export(export.meta["backbone_from"])
    held_out = training.embedded_steps(options.dataset_dir, training.held_out_split(options.dataset_dir),
                                       config.returns)
    simulated = _env_name(options, export).startswith(("sim:", "gym:"))  # never a real robot without a human
    verdict = stage_gate.check_offline_policy(
        learner, offline_state.policy_params, sft.head_params, offline_state.critic_params, held_out,
        make_policy=builder.make_policy, env_factory=training.eval_env_factory(options, spec) if simulated else None,
        episodes=online.gate_episodes)
    stage_gate.enforce(verdict, online.gate, log=lambda text: print(text, file=sys.stderr, flush=True))
    return {"ok": verdict.ok, **verdict.figures}


def _print_control_pauses(pauses: dict) -> None:
    """One stderr line: how long the control loop took from an observation to its action."""
    if pauses.get("pauses"):
        print(f"control loop: observation -> action median {pauses['median_ms']:.1f} ms, p99 {pauses['p99_ms']:.1f} "
              f"ms, longest {pauses['max_ms']:.1f} ms over {pauses['pauses']} steps", file=sys.stderr, flush=True)


def _every(period_s: float, check):
    """`check` called at most every `period_s` seconds (its last answer in between)."""
    last = {"at": float("-inf"), "value": False}

    def throttled() -> bool:
        now = time.monotonic()
        if now - last["at"] >= period_s:
            last["at"], last["value"] = now, check()
        return last["value"]

    return throttled


def actor_figures(client, slots: int) -> dict[str, dict]:
    """Per actor slot that reported: acknowledged records, finished, and its collection figures
    (env steps, episodes, intervention steps, steps/s of its current process)."""
    figures = {}
    for index, progress in enumerate(read_progress(client, slots)):
        if progress is not None:
            stats = progress.stats.as_dict() if progress.stats is not None else {}
            figures[str(index)] = {"acknowledged": progress.acknowledged, "finished": progress.finished, **stats}
    return figures


def _success_q(learner, offline_state, state, probe: SuccessProbe) -> dict:
    """Mean Q of the successful online episodes' transitions: offline critic vs online critic."""
    batch = probe.batch()
    if batch is None:
        return {}
    observation, actions = batch
    return {"q_success_steps_offline": learner.q_value(offline_state.critic_params, observation, actions),
            "q_success_steps_online": learner.q_value(state.critic_params, observation, actions),
            "q_success_probe_steps": len(actions)}


def _restored_publication(store: ReverbParameterStore):
    """The publication a restored replay checkpoint holds, if it verifies (else none: logged)."""
    try:
        return store.latest()
    except UntrustedPublication as error:
        print(f"ignoring the restored parameter publication: {error}", file=sys.stderr, flush=True)
        return None


def _table_size(server, table: str) -> int:
    return server.client.server_info()[table].current_size


def make_actor(options, config: AgentConfig, builder: ConRFTBuilder, spec: EpisodeSpec, address, client, record,
               stop, first_step, env_factory, secret: bytes, first_record: int = 0) -> OnlineActor:
    """The online actor: env + human device behind the intervention wrapper, policy, reliable
    replay writer (its records numbered from `first_record`), parameter store (publications
    verified with `secret`) and periodic evaluation."""
    online = config.online
    if env_factory is None:
        raise training.ConfigMismatchError("the online actor needs a robot: pass --env (e.g. --env=franka:<task>); "
                                           "only simulator datasets imply their environment")

    def make_actor_env():
        base_env = env_factory()
        return InterventionWrapper(base_env, make_device_for(online.teleop, base_env, config.train.seed))

    store = ReverbParameterStore(client, builder.acting_template(), online.max_actors, secret=secret)  # its reader

    def watermark(new_client) -> int | None:
        published = ReverbParameterStore(new_client, builder.acting_template(), online.max_actors,
                                         secret=secret).latest()
        return None if published is None else published.durable_for(online.actor_index)

    episode_dir = Path(options.workdir) / "episodes"
    episode_dir.mkdir(parents=True, exist_ok=True)
    done_before = recorded_transitions(episode_dir)  # a resumed run continues its env-step budget
    raw_spec = dataclasses.replace(spec, embedding_dim=0, with_mc_return=False)  # what the robot records
    policy = builder.make_policy(deterministic=False, seed=config.train.seed)
    policy.version = int(builder.export.meta.get("learner_step", -1))  # the export's parameters
    evaluation = None
    if online.eval_every > 0 and online.eval_episodes > 0:
        evaluation = PeriodicEvaluation(policy=builder.make_policy(deterministic=True), every=online.eval_every,
                                        episodes=online.eval_episodes, seed=config.train.seed + 90_000,
                                        video_dir=os.path.join(options.workdir, "videos"))
    writer = ReliableWriter(address, builder.make_transition_writer, actor_index=online.actor_index,
                            watermark=watermark, client=client, retry_every_s=online.retry_every_s,
                            stop=stop.is_set, first_record=first_record)
    return OnlineActor(make_env=make_actor_env, policy=policy, writer=writer, store=store,
                       episode_dir=str(episode_dir), spec=raw_spec, env_steps=max(0, online.env_steps - done_before),
                       steps_before=done_before,
                       seed=config.train.seed + 50_000 + 1_000_003 * online.actor_index + first_step + done_before,
                       record=record, stop=stop, evaluation=evaluation, actor_index=online.actor_index,
                       operator=online.teleop, wait_durable=online.role == "actor",
                       cameras=tuple(k[len("image_"):] for k in builder.observation_keys if k.startswith("image_")))


def _run_actor_role(options, config: AgentConfig, loss: LossConfig, export: PolicyExport, start: float) -> dict:
    """Acts on this machine against a learner's replay server at `config.online.replay_address`."""
    online = config.online
    if not online.replay_address:
        raise training.ConfigMismatchError("--role=actor needs --replay_address=HOST:PORT of the learner")
    secret = read_secret(online.params_secret_file)
    meta_spec = export.meta["spec"]
    spec = EpisodeSpec(cameras={c: tuple(hw) for c, hw in meta_spec["cameras"].items()}, state_dim=meta_spec["state_dim"],
                       action_dim=meta_spec["action_dim"], embedding_dim=export.config.backbone.width)
    options = dataclasses.replace(options, env=_env_name(options, export))
    client = connect(online.replay_address, timeout_s=60.0)
    online = dataclasses.replace(online, max_actors=slot_count(client))  # the learner's --actor_slots
    config = dataclasses.replace(config, online=online)
    claim = SlotClaim(online.replay_address, online.actor_index, lease_s=online.slot_lease_s).acquire(client)
    try:
        return _act(options, config, loss, export, spec, client, secret, start)
    finally:
        claim.release()


def _act(options, config: AgentConfig, loss: LossConfig, export: PolicyExport, spec: EpisodeSpec, client,
         secret: bytes, start: float) -> dict:
    """The actor role on its claimed slot: numbering goes on from the slot's acknowledged records
    (a restarted actor's earlier steps are on the server)."""
    online = config.online
    earlier = read_progress(client, online.max_actors)[online.actor_index]
    builder = agent_builder(online.agent)(config, loss, spec, export, online=True)
    record = OnlineRecord(options.workdir)
    stop = threading.Event()
    actor = make_actor(options, config, builder, spec, online.replay_address, client, record, stop, 0,
                       training.eval_env_factory(options, spec), secret,
                       first_record=earlier.acknowledged if earlier is not None else 0)
    log = TrainingLog(options.workdir, online.env_steps, actor.steps_before, "online env steps", options.show_progress)
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
    pauses = actor.pauses.summary()
    _print_control_pauses(pauses)
    writer = actor.writer
    return {**record.summary(), "replay_items_written": writer.items_written, "role": "actor",
            "actor_index": online.actor_index, "transitions": actor.steps_done, "records_sent": writer.records,
            "resent": writer.resent, "reconnects": writer.reconnects, "journal_dropped": writer.dropped,
            "parameters_refused": actor.poller.rejected, "control_pauses": pauses,
            "policy_versions": sorted({e.policy_version for e in record.episodes}),
            "report": online_report(options.workdir, Path(options.workdir) / "report"),
            "wall_s": time.time() - start}

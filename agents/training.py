"""The training stages behind `agents/train.py`: SFT and the offline Cal-ConRFT stage.

Both share one loop (`run_loop`): progress bar with rates, TensorBoard scalars, orbax
checkpoints with exact resume, a NaN/Inf guard that stops without saving the bad state, periodic
evaluation on the robot (held-out BC error, success rate, mean episode length, an MP4), and a
policy export for the next stage. Each stage returns the final evaluation as a dict.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

from vlarft.agents.checkpointing import Checkpointer
from vlarft.agents.config import (AgentConfig, LossConfig, OnlineConfig, ReturnConfig, config_from_json,
                                  config_to_json)
from vlarft.agents.evaluation import evaluate
from vlarft.agents.export import PolicyExport, export_policy, load_policy_export
from vlarft.agents.metrics_log import TrainingLog, check_finite, crossed
from vlarft.agents.observation import StateNormalizer
from vlarft.datasets import statistics
from vlarft.datasets.reader import dataset_spec, iterate_episodes, open_dataset
from vlarft.datasets.replay.returns import episode_returns
from vlarft.datasets.schema import EpisodeSpec


class ConfigMismatchError(ValueError):
    """The dataset does not fit the config, checkpoint or policy it is trained with."""


@dataclasses.dataclass
class StageOptions:
    """What every stage needs from the command line.

    Attributes:
      dataset_dir: the RLDS dataset (version directory).
      workdir: checkpoints, TensorBoard logs, evaluation videos and the policy export.
      steps: learner steps to reach (a resumed run continues up to this number).
      env: environment for evaluation (`sim:<task>`; default: the dataset's task on the simulator).
      eval_episodes: episodes per evaluation (0 = no robot evaluation).
      init_from: a workdir (or export) to start from (offline: the SFT policy; default: the one
        that made the dataset's embeddings).
      loss_preset: `stable`, `paper` or `reference` loss weights (`config.loss_preset`).
      action_dim: the action dimension the run expects; the dataset must match.
      backbone_weights: SFT: a local backbone checkpoint (msgpack, `save_backbone_params`) to
        start from instead of random weights; its parameter paths and shapes must match.
      backbone_from: SFT: a directory made by `tools/import_octo.py` (an imported Octo
        checkpoint): the backbone becomes that Octo architecture (`backbone_config.json`) with its
        weights; the rest of the config (head, training) is kept.
      critic_encoder_weights: offline, pixel critic: a ResNet trunk file loaded into every
        camera's encoder (`load_encoder_params`).
      show_progress: draw the progress bar.
    """

    dataset_dir: str
    workdir: str
    steps: int
    env: str = ""
    eval_episodes: int = -1
    init_from: str = ""
    loss_preset: str = "stable"
    action_dim: int = 7
    backbone_weights: str = ""
    backbone_from: str = ""
    critic_encoder_weights: str = ""
    show_progress: bool = True


# ---------------------------------------------------------------- checks and set-up


def check_dataset(spec: EpisodeSpec, options: StageOptions, expected: dict | None = None) -> None:
    """Refuses a dataset whose action dimension, cameras, image sizes or state size differ from
    what the run expects (`expected`: a checkpoint's or policy's recorded spec)."""
    if spec.action_dim != options.action_dim:
        raise ConfigMismatchError(f"{options.dataset_dir}: action dimension {spec.action_dim}, "
                                  f"but the run expects {options.action_dim} (--action_dim)")
    if not expected:
        return
    for field, mine in (("cameras", {c: list(hw) for c, hw in spec.cameras.items()}), ("state_dim", spec.state_dim),
                        ("action_dim", spec.action_dim)):
        theirs = expected.get(field)
        if theirs is not None and theirs != mine:
            raise ConfigMismatchError(f"{options.dataset_dir}: {field} is {mine}, but {expected.get('source', 'the policy')} "
                                      f"was trained with {theirs}")


# Head fields that only shape training, not the function the policy computes or how it acts.
TRAINING_ONLY_HEAD_FIELDS = ("action_bound",)


def check_same_networks(config: AgentConfig, trained: AgentConfig, source: str, *, critic: bool = False) -> None:
    """Refuses to continue a policy (and, with `critic`, its critic) under a config whose head
    (or critic) differs from the one it was trained with: the learner would build other networks
    than the checkpoint holds, or the actor would sample differently from what the learner trains.
    The first differing field is named."""
    sections = [("head", config.head, trained.head)] + ([("critic", config.critic, trained.critic)] if critic else [])
    for name, mine, theirs in sections:
        for field in dataclasses.fields(mine):
            if name == "head" and field.name in TRAINING_ONLY_HEAD_FIELDS:
                continue
            if getattr(mine, field.name) != getattr(theirs, field.name):
                raise ConfigMismatchError(f"{name}.{field.name} is {getattr(mine, field.name)!r} here but "
                                          f"{getattr(theirs, field.name)!r} in {source}; use the same --config "
                                          f"(and --set {name}.*) as that run")


def with_backbone_of(config: AgentConfig, export: PolicyExport) -> AgentConfig:
    """`config` with the backbone section of the policy it continues: the backbone is frozen after
    SFT (e.g. an imported Octo backbone, or one reading a language embedding), and the policies
    this stage exports must describe the backbone they carry."""
    return dataclasses.replace(config, backbone=export.config.backbone)


def spec_meta(spec: EpisodeSpec) -> dict:
    return {"cameras": {c: list(hw) for c, hw in spec.cameras.items()}, "state_dim": spec.state_dim,
            "action_dim": spec.action_dim}


def dataset_task(dataset_dir: str) -> tuple[str, str, str]:
    """(task, instruction, robot) of the dataset's first training episode."""
    for episode in iterate_episodes(dataset_dir, "train"):
        meta = episode["episode_metadata"]
        return meta["task"], meta["instruction"], meta["robot"]
    raise ValueError(f"{dataset_dir}: the train split is empty")


def eval_env_factory(options: StageOptions, spec: EpisodeSpec) -> Callable | None:
    """A zero-argument env factory for evaluation and acting (its envs must have the dataset's
    cameras, else ValueError naming them), or None when no robot evaluation is possible."""
    from vlarft.robot_io.contract import require_cameras
    from vlarft.robot_io.factory import make_env

    env_name = options.env
    if not env_name:
        task, _, robot = dataset_task(options.dataset_dir)
        if not robot.startswith("sim"):
            return None
        env_name = f"sim:{task}"
    size = next(iter(spec.cameras.values()))
    kwargs = {"image_size": tuple(size)} if env_name.startswith("sim:") else {}
    return lambda: require_cameras(make_env(env_name, **kwargs), spec.cameras, env_name)


# ---------------------------------------------------------------- the loop


def run_loop(*, name: str, state: Any, start_step: int, options: StageOptions, config: AgentConfig,
             step_fn: Callable[[Any], tuple[Any, dict]], checkpointer: Checkpointer, meta: dict,
             evaluate_fn: Callable[[Any, int], dict], export_fn: Callable[[Any, int], None],
             resume_meta: Callable[[], dict] | None = None, steps_per_call: int = 1) -> tuple[Any, dict]:
    """Runs `step_fn` up to `options.steps`; returns (state, final evaluation). Each call of
    `step_fn` makes `steps_per_call` learner steps (`options.steps - start_step` must be a multiple);
    logging, checkpoints and evaluations come after the call that reaches or passes a multiple of
    their period. `resume_meta()`, taken after every call, is saved with that step's checkpoint
    (e.g. the sampling generator's state, so a resumed run draws the batches an uninterrupted one
    would)."""
    if (options.steps - start_step) % steps_per_call:
        raise ValueError(f"{options.steps - start_step} steps to make are not a multiple of {steps_per_call} per call")
    train = config.train
    log = TrainingLog(options.workdir, options.steps, start_step, name, options.show_progress)
    step, last_saved = start_step, start_step
    resume = resume_meta() if resume_meta else {}
    try:
        while step < options.steps:
            new_state, metrics = step_fn(state)
            metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
            before = step
            check_finite(metrics, before + steps_per_call)  # raises before the bad state is kept or saved
            state, step = new_state, before + steps_per_call
            resume = resume_meta() if resume_meta else {}
            if crossed(before, step, train.log_every) or step == options.steps:
                rate = log.progress(step, metrics)
                log.scalars(step, {**metrics, "learner_steps_per_s": rate}, prefix="train/")
            if crossed(before, step, train.checkpoint_every) or step == options.steps:
                checkpointer.save(step, state, {**meta, **resume})
                last_saved = step
            if train.eval_every and crossed(before, step, train.eval_every) and step != options.steps:
                log.scalars(step, _numeric(evaluate_fn(state, step)), prefix="eval/")
    except KeyboardInterrupt:
        if step != last_saved:
            checkpointer.save(step, state, {**meta, **resume})
        raise
    finally:
        log.close()
    final = evaluate_fn(state, step)
    log_final = TrainingLog(options.workdir, options.steps, step, name, show_progress=False)
    log_final.scalars(step, _numeric(final), prefix="eval/")
    log_final.close()
    export_fn(state, step)
    return state, {**final, "learner_steps": step}


SAMPLER_STATE = "sampler_state"  # checkpoint meta: the batch sampling generator's state


def sampling_generator(seed: int, resumed: dict | None, step: int) -> np.random.Generator:
    """The batch sampling generator: seeded from `seed`, or, on resume, exactly where the
    checkpoint left it (`resume_meta_of`); a checkpoint that predates this gets (seed, step)."""
    rng = np.random.default_rng(seed)
    if resumed is None:
        return rng
    if SAMPLER_STATE not in resumed:
        return np.random.default_rng([seed, step])
    rng.bit_generator.state = resumed[SAMPLER_STATE]
    return rng


def resume_meta_of(rng: np.random.Generator) -> Callable[[], dict]:
    """`run_loop`'s `resume_meta` for a sampling generator."""
    return lambda: {SAMPLER_STATE: rng.bit_generator.state}


def offline_steps_per_call(config: AgentConfig, steps: int, start_step: int) -> int:
    """Learner steps per jitted call of the offline stage: `AgentConfig.steps_per_dispatch()`, as the
    online stage, when the steps to make and the critic warm-up's end fall on whole calls; else 1
    (each call runs whole steps of one kind, and the run ends exactly at `steps`)."""
    k = config.steps_per_dispatch()
    warmup = config.train.critic_warmup_steps
    aligned = (steps - start_step) % k == 0 and not (start_step < warmup < steps and (warmup - start_step) % k)
    return k if aligned else 1


def check_steps(options: StageOptions) -> None:
    """A stage trains up to `options.steps` learner steps (0: only evaluates and exports)."""
    if options.steps < 0:
        raise ValueError(f"--steps={options.steps}: the number of learner steps to reach cannot be negative "
                         f"(0 = evaluate and export without training)")


def _numeric(values: dict) -> dict:
    return {k: v for k, v in values.items() if isinstance(v, (int, float)) and np.isfinite(v)}


def robot_evaluation(policy, options: StageOptions, config: AgentConfig, spec: EpisodeSpec, step: int) -> dict:
    """Success rate, episode lengths and an MP4 on the evaluation robot (deterministic policy)."""
    factory = eval_env_factory(options, spec)
    episodes = config.train.eval_episodes if options.eval_episodes < 0 else options.eval_episodes
    if factory is None or episodes == 0:
        return {"success_rate": float("nan"), "mean_episode_length": float("nan"), "episodes": 0}
    video = os.path.join(options.workdir, "videos", f"step_{step:07d}.mp4")
    return evaluate(policy, factory, episodes, video_path=video).as_dict() | {"video": video}


def open_checkpointer(options: StageOptions, config: AgentConfig, stage: str) -> tuple[Checkpointer, dict | None]:
    """The run's checkpointer and, when resuming, the metadata it recorded (checked to match)."""
    checkpointer = Checkpointer(os.path.join(options.workdir, "checkpoints"), keep=config.train.keep_checkpoints,
                                cleanup_interrupted_saves=True)  # this run owns them
    if checkpointer.latest_step() is None:
        return checkpointer, None
    meta = checkpointer.restore_meta()
    if meta.get("stage") != stage:
        raise ConfigMismatchError(f"{options.workdir} holds a {meta.get('stage')!r} run; use another --workdir "
                                  f"for the {stage!r} stage")
    if _learning_part(config_from_json(meta["config"])) != _learning_part(config):
        raise ConfigMismatchError(f"{options.workdir} was trained with another config; resume with the same "
                                  f"--config and flags or use another --workdir")
    return checkpointer, meta


def _learning_part(config: AgentConfig) -> AgentConfig:
    """The config without bookkeeping (logging, evaluation, checkpoint cadence, the online budget
    and deployment), which may change on resume."""
    neutral = dict(log_every=0, eval_every=0, checkpoint_every=0, eval_episodes=0, keep_checkpoints=0, devices="",
                   replay_sampler_workers=0)
    online = {name: getattr(OnlineConfig(), name) for name in OnlineConfig.BOOKKEEPING}
    return dataclasses.replace(config, train=dataclasses.replace(config.train, **neutral),
                               online=dataclasses.replace(config.online, **online))


# ---------------------------------------------------------------- SFT


def with_imported_backbone(config: AgentConfig, options: StageOptions, dataset_embedding_dim: int):
    """(config with the imported Octo backbone, its params) for `--backbone_from=DIR`.

    A dataset `language_embedding` must then be the T5 states of the instruction, flattened
    (octo_task_tokens x language_embedding_dim values); without one the instruction is not seen."""
    from vlarft.agents.octo_import import load_import

    if options.backbone_weights:
        raise ValueError("use either --backbone_weights or --backbone_from, not both")
    backbone, params = load_import(options.backbone_from)
    wanted = backbone.octo_task_tokens * backbone.language_embedding_dim
    if dataset_embedding_dim and dataset_embedding_dim != wanted:
        raise ValueError(f"{options.dataset_dir}: language_embedding has {dataset_embedding_dim} values, the Octo "
                         f"backbone of {options.backbone_from} takes T5 states of {backbone.octo_task_tokens} x "
                         f"{backbone.language_embedding_dim} = {wanted}")
    return dataclasses.replace(config, backbone=backbone), params



def run_sft(options: StageOptions, config: AgentConfig) -> dict:
    """Behaviour cloning of backbone + consistency head on the dataset's demonstrations."""
    from vlarft.agents.sft import SFTLearner
    from vlarft.agents.actor import ConRFTPolicy
    from vlarft.agents.step_data import StepData, WindowStream, use_stream

    start = time.time()
    check_steps(options)
    if options.init_from:
        raise ValueError(f"--init_from={options.init_from}: the SFT stage does not start from a policy; to start "
                         f"from trained backbone weights use --backbone_weights=FILE")
    spec = dataset_spec(options.dataset_dir)
    check_dataset(spec, options)
    imported = None
    if options.backbone_from:
        config, imported = with_imported_backbone(config, options, spec.language_embedding_dim)
    elif spec.language_embedding_dim:  # the dataset's precomputed instruction embedding replaces text tokens
        config = dataclasses.replace(config, backbone=dataclasses.replace(
            config.backbone, language_embedding_dim=spec.language_embedding_dim))
    checkpointer, resumed = open_checkpointer(options, config, "sft")
    if resumed:
        check_dataset(spec, options, {**resumed["spec"], "source": f"the checkpoint in {options.workdir}"})
    normalizer = StateNormalizer.from_statistics(statistics.load_statistics(options.dataset_dir))
    bb = config.backbone
    data_kwargs = dict(window=bb.window, max_text_tokens=bb.max_text_tokens, vocab_size=bb.vocab_size,
                       normalizer=normalizer)
    held_out = held_out_split(options.dataset_dir)
    streaming = use_stream(options.dataset_dir, ("train", held_out), config.train)
    cameras = tuple(sorted(spec.cameras))
    if streaming:  # bounded memory: windows streamed from the TFDS files (agents/step_data.py)
        stream_kwargs = dict(data_kwargs, shuffle_buffer_mb=config.train.shuffle_buffer_mb)
        valid_data = WindowStream(options.dataset_dir, held_out, shuffled=False, **stream_kwargs)
        first_batch = next(WindowStream(options.dataset_dir, "train", shuffled=False, **stream_kwargs).batches(2))
    else:
        train_data = StepData(options.dataset_dir, "train", **data_kwargs)
        valid_data = StepData(options.dataset_dir, held_out, **data_kwargs)
        first_batch = train_data.sample(np.random.default_rng(config.train.seed), 2)
    task, instruction, _ = dataset_task(options.dataset_dir)
    learner = SFTLearner(config, spec.action_dim, cameras, spec.state_dim)
    state = learner.init(jax.random.PRNGKey(config.train.seed), first_batch)
    start_step = 0
    if resumed:
        state, resumed = checkpointer.restore(state)
        start_step = int(state.step)
    elif options.backbone_weights or imported is not None:
        from vlarft.agents.networks import load_backbone_params
        from vlarft.agents.networks.common import check_tree

        backbone = (check_tree(imported, state.params["backbone"], f"imported backbone {options.backbone_from}")
                    if imported is not None else
                    load_backbone_params(options.backbone_weights, target=state.params["backbone"]))
        params = {**state.params, "backbone": backbone}
        state = state.replace(params=params, policy_params=params)
    meta = {"stage": "sft", "config": config_to_json(config), "spec": spec_meta(spec),
            "normalizer": normalizer.to_json(), "instruction": instruction, "task": task,
            "dataset_dir": os.path.abspath(options.dataset_dir),
            "data_loading": "stream" if streaming else "memory"}
    if "language_embedding" in first_batch:  # what the actor feeds the backbone for this task
        meta["language_embedding"] = np.asarray(first_batch["language_embedding"][0]).tolist()

    rng = sampling_generator(config.train.seed, resumed, start_step)
    if streaming:  # a resumed stream is re-seeded with the step reached (not the batches an uninterrupted run draws)
        batches = WindowStream(options.dataset_dir, "train", shuffled=True, seed=int(np.random.default_rng([config.train.seed, start_step]).integers(1 << 31)),
                               **stream_kwargs).batches(config.train.batch_size)
        next_batch = lambda: next(batches)  # noqa: E731
    else:
        next_batch = lambda: train_data.sample(rng, config.train.batch_size)  # noqa: E731

    def step_fn(s):
        return learner.step(s, next_batch())

    def bc_error(s):
        errors = [(n, learner.bc_error(s, batch)) for n, batch in valid_data.iterate(config.train.batch_size)]
        return sum(n * e for n, e in errors) / sum(n for n, _ in errors)

    def policy_of(s):
        return ConRFTPolicy(config, s.policy_params["backbone"], s.policy_params["head"], cameras=cameras,
                            state_dim=spec.state_dim, action_dim=spec.action_dim, normalizer=normalizer,
                            instruction=instruction, language_embedding=meta.get("language_embedding"))

    def evaluate_fn(s, step):
        return {"bc_action_mse": bc_error(s), **robot_evaluation(policy_of(s), options, config, spec, step)}

    def export_fn(s, step):
        export_policy(options.workdir, s.policy_params["backbone"], s.policy_params["head"],
                      _export_meta(meta, cameras, spec, step))

    _, final = run_loop(name="sft", state=state, start_step=start_step, options=options, config=config,
                        step_fn=step_fn, checkpointer=checkpointer, meta=meta, evaluate_fn=evaluate_fn,
                        export_fn=export_fn, resume_meta=resume_meta_of(rng))
    checkpointer.close()
    return {**final, "wall_s": time.time() - start}


def _export_meta(meta: dict, cameras, spec: EpisodeSpec, step: int) -> dict:
    return {**meta, "cameras": list(cameras), "state_dim": spec.state_dim, "action_dim": spec.action_dim,
            "learner_step": step}


# ---------------------------------------------------------------- offline Cal-ConRFT


def embedding_info(dataset_dir: str) -> dict:
    """The dataset's embedding.json: which policy export's backbone computed its embeddings."""
    path = Path(dataset_dir) / "embedding.json"
    if not path.exists():
        raise ConfigMismatchError(f"{dataset_dir}: no embedding.json; make this dataset with pipelines/embed_dataset.py")
    return json.loads(path.read_text())


def embedding_source(dataset_dir: str) -> str:
    """The policy export whose backbone computed the dataset's cached embeddings."""
    return embedding_info(dataset_dir)["policy_from"]


def check_embedding_backbone(dataset_dir: str, export: PolicyExport, export_from: str) -> None:
    """Refuses a policy whose backbone is not the one that computed the dataset's embeddings."""
    info = embedding_info(dataset_dir)
    made_by = info.get("backbone_sha256") or load_policy_export(info["policy_from"]).backbone_sha256
    if export.backbone_sha256 != made_by:
        raise ConfigMismatchError(
            f"{export_from}: its backbone is not the one that computed the cached embeddings of {dataset_dir} "
            f"(made by {info['policy_from']}, see embedding.json); start from that policy or embed the dataset "
            f"with this one (pipelines/embed_dataset.py)")


def run_offline(options: StageOptions, config: AgentConfig, loss: LossConfig) -> dict:
    """Cal-ConRFT: Cal-QL critic + consistency actor on cached embeddings served by Reverb."""
    from vlarft.agents.builder import ConRFTBuilder

    start = time.time()
    check_steps(options)
    spec = dataset_spec(options.dataset_dir)
    check_dataset(spec, options)
    if not spec.embedding_dim:
        raise ConfigMismatchError(f"{options.dataset_dir}: the dataset has no cached `embedding` field; "
                                  f"run pipelines/embed_dataset.py with the SFT policy first")
    export_from = options.init_from or embedding_source(options.dataset_dir)
    export: PolicyExport = load_policy_export(export_from)
    config = with_backbone_of(config, export)
    checkpointer, resumed = open_checkpointer(options, config, "offline")
    check_embedding_backbone(options.dataset_dir, export, export_from)
    check_dataset(spec, options, {**export.meta["spec"], "source": "the SFT policy"})
    if export.config.backbone.width != spec.embedding_dim:
        raise ConfigMismatchError(f"{options.dataset_dir}: embeddings have width {spec.embedding_dim}, the policy's "
                                  f"backbone outputs {export.config.backbone.width}")
    check_same_networks(config, export.config, f"the SFT policy {export_from}")
    builder = ConRFTBuilder(config, loss, spec, export)
    server = builder.make_replay_server()
    try:
        loaded = builder.load_demos(server, options.dataset_dir, options.show_progress)
        learner = builder.make_learner()
        with builder.make_iterator(server.address) as first:
            state = builder.parallel.replicate(learner.init(jax.random.PRNGKey(config.train.seed), next(first)))
        start_step = 0
        if resumed:
            state, _ = checkpointer.restore(state)  # onto this run's devices, whatever the saving run's were
            start_step = int(state.step)
        else:
            state = learner.with_head(state, export.head_params)
            if options.critic_encoder_weights:
                from vlarft.agents.networks import load_encoder_params

                critic = state.critic_params
                for camera in spec.cameras:
                    critic = load_encoder_params(critic, options.critic_encoder_weights, camera)
                state = state.replace(critic_params=critic, target_critic_params=critic)
            state = builder.parallel.replicate(state)
        meta = {**export.meta, "stage": "offline", "config": config_to_json(config), "loss": dataclasses.asdict(loss),
                "spec": spec_meta(spec), "dataset_dir": os.path.abspath(options.dataset_dir),
                "backbone_from": os.path.abspath(export_from)}
        held_out = embedded_steps(options.dataset_dir, held_out_split(options.dataset_dir))

        def evaluate_fn(s, step):
            policy = builder.make_policy(s.policy_params)
            bc = learner.bc_error(s, held_out["embedding"], held_out["state"], held_out["action"])
            return {"bc_action_mse": bc, **robot_evaluation(policy, options, config, spec, step)}

        def export_fn(s, step):
            export_policy(options.workdir, export.backbone_params, s.policy_params,
                          _export_meta(meta, export.cameras, spec, step))

        k = offline_steps_per_call(config, options.steps, start_step)
        with builder.make_iterator(server.address, steps=k) as batches:  # each item: k steps' rows

            def step_fn(s):  # the first critic_warmup_steps steps train the critic only
                return learner.steps(s, next(batches), k, update_actor=int(s.step) >= config.train.critic_warmup_steps)

            _, final = run_loop(name="offline", state=state, start_step=start_step, options=options, config=config,
                                step_fn=step_fn, checkpointer=checkpointer, meta=meta, evaluate_fn=evaluate_fn,
                                export_fn=export_fn, steps_per_call=k)
    finally:
        server.stop()
        checkpointer.close()
    return {**final, "demo_transitions": loaded["transitions"], "wall_s": time.time() - start}


def held_out_split(dataset_dir: str) -> str:
    """The split stages evaluate on: `validation` when the dataset has one, else `train`."""
    splits = open_dataset(dataset_dir).info.splits
    return "validation" if "validation" in splits else "train"


def embedded_steps(dataset_dir: str, split: str, returns: ReturnConfig | None = None) -> dict[str, np.ndarray]:
    """Embedding, raw state and action of every real transition of a split (with `returns`, also
    each transition's Monte-Carlo return `mc_return`)."""
    parts: dict[str, list] = {"embedding": [], "state": [], "action": []}
    for episode in iterate_episodes(dataset_dir, split):
        steps = episode["steps"]
        real = ~steps["is_last"]
        parts["embedding"].append(steps["embedding"][real])
        parts["state"].append(steps["observation"]["state"][real])
        parts["action"].append(steps["action"][real])
        if returns is not None:
            parts.setdefault("mc_return", []).append(episode_returns(steps, returns))
    return {k: np.concatenate(v) for k, v in parts.items()}

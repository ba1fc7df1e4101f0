"""Configuration of the ConRFT agent: dataclasses with documented defaults and named presets.

`get_config("tiny" | "small")` gives a whole `AgentConfig`; `loss_preset(name, stage)` gives the
loss weights of the paper (`paper`, default) or of the reference code (`reference`).
Every default below is the paper's unless its comment says otherwise.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class BackboneConfig:
    """Octo-style VLA transformer that turns (images, proprio, instruction) into an embedding.

    Attributes:
      width: token width (Octo-small: 384).
      depth: transformer blocks (Octo-small: 12).
      heads: attention heads (Octo-small: 6).
      mlp_ratio: MLP hidden width / token width.
      patch_size: image patch side in pixels (per camera tokenizer: a conv stem, then patches).
      stem_features: channels of the 3x3/2 conv stem before patching (0 = plain ViT patchify,
        much cheaper on a CPU).
      window: observation frames per sample (Octo/ConRFT: 2).
      num_readouts: readout tokens per frame; the embedding is their mean at the last frame.
      max_text_tokens: instruction tokens (built-in hashing tokenizer, no download).
      vocab_size: hashing-tokenizer vocabulary size.
      language_embedding_dim: when > 0, a precomputed `language_embedding` of this width is
        projected to one task token instead of tokenizing the instruction.
      dropout: attention/MLP dropout while training.
      architecture: "vlarft" (this toolkit's backbone above) or "octo" (Octo's exact architecture,
        `networks/octo_backbone.py`, for weights imported by `tools/import_octo.py`; the fields
        below apply to it, together with width/depth/heads/mlp_ratio/num_readouts/window).
      octo_cameras: Octo's image tokenizer names ("primary", "wrist") fed by the dataset's cameras
        in sorted order.
      octo_image_sizes: square image side per Octo camera (256, 128 for the released models);
        other frame sizes are resized to it (bilinear).
      octo_goal_images: Octo's image tokenizers stack a goal image on the channel axis (an all-zero
        one here: language-conditioned tasks), as the released models do.
      octo_stem_features: channels of SmallStem16's four 3x3/2 weight-standardised convolutions.
      octo_stem_out: channels of the stem's final 1x1 convolution (before the token projection).
      octo_max_horizon: frames of the position embeddings (10; `window` must not exceed it).
      octo_task_tokens: instruction tokens (T5 states: 16); `language_embedding_dim` is their width
        (T5-base: 768).
      octo_repeat_task_tokens: Octo 1.5 repeats the task tokens in every frame.
      octo_correct_attention: Octo 1.5's token-group lookup; False = Octo 1.0's off-by-one mask.
    """

    width: int = 384
    depth: int = 12
    heads: int = 6
    mlp_ratio: int = 4
    patch_size: int = 16
    stem_features: int = 32
    window: int = 2
    num_readouts: int = 1
    max_text_tokens: int = 16
    vocab_size: int = 4096
    language_embedding_dim: int = 0
    dropout: float = 0.0
    architecture: str = "vlarft"
    octo_cameras: tuple[str, ...] = ("primary", "wrist")
    octo_image_sizes: tuple[int, ...] = (256, 128)
    octo_goal_images: bool = True
    octo_stem_features: tuple[int, ...] = (32, 96, 192, 384)
    octo_stem_out: int = 512
    octo_max_horizon: int = 10
    octo_task_tokens: int = 16
    octo_repeat_task_tokens: bool = True
    octo_correct_attention: bool = True


@dataclasses.dataclass(frozen=True)
class ConsistencyConfig:
    """Consistency-policy action head (EDM/Karras parameterisation, ConRFT §3).

    Attributes:
      hidden: MLP hidden sizes (Dense -> LayerNorm -> tanh each).
      time_dim: width of the noise-level (time) embedding.
      proprio_dim: width of the proprio projection (Dense -> LayerNorm -> tanh).
      num_scales: M, number of Karras noise levels (40).
      sigma_min, sigma_max, sigma_data, rho: Karras schedule constants (0.002, 80, 0.5, 7).
      action_bound: how outputs are kept in the action box [-1, 1]. "clip" (the reference
        code): every output is clipped inside the network, so a saturated dimension gets no
        gradient from the BC or the Q term and cannot come back. "straight_through" (default):
        the BC loss reads the unbounded output (it is pulled back into the box from anywhere),
        sampled actions (acting, TD targets, the Q term) are clipped with an identity gradient.
      eval_noise_seed: the fixed noise of the deterministic (evaluation) mode.
    """

    hidden: tuple[int, ...] = (256, 256)
    time_dim: int = 16
    proprio_dim: int = 64
    num_scales: int = 40
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    sigma_data: float = 0.5
    rho: float = 7.0
    action_bound: str = "clip"
    eval_noise_seed: int = 0


@dataclasses.dataclass(frozen=True)
class CriticConfig:
    """Q-function ensemble.

    Attributes:
      ensemble_size: K members (2); the TD target takes their min, the actor their mean.
      hidden: per-member MLP hidden sizes.
      input: "embedding" (reads the cached backbone embedding: no images in a learner step;
        the CPU default) or "pixels" (own per-camera ResNet-10-like encoders, as the reference).
      encoder_widths: channels of the four ResNet stages (ResNet-10: 64, 128, 256, 512).
      spatial_features: learned spatial-embedding features per channel (8).
      bottleneck: per-camera feature width after the spatial embedding (256).
      proprio_dim: proprio projection width (64).
      dropout: dropout on image features while training (0.1).
      crop_pad: random-crop augmentation padding in pixels (4), pixel critic only.
    """

    ensemble_size: int = 2
    hidden: tuple[int, ...] = (256, 256)
    input: str = "embedding"
    encoder_widths: tuple[int, ...] = (64, 128, 256, 512)
    spatial_features: int = 8
    bottleneck: int = 256
    proprio_dim: int = 64
    dropout: float = 0.1
    crop_pad: int = 4


AWR_SCALES = ("std", "mean_abs")  # LossConfig.awr_scale


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Loss weights and RL constants of one stage.

    Attributes:
      cql_alpha: weight of the Cal-QL conservative term (0 = plain TD, the online stage).
      bc_weight: beta, weight of the consistency BC term in the actor loss.
      q_weight: eta, weight of -Q in the actor loss.
      online_bc_weight: weight of the BC term on online rows the policy itself chose (not human
        interventions), relative to demo and intervention rows. 1 = BC on the whole mixed batch
        (paper and reference code); 0 = BC only on demonstrations and interventions (a variant
        of the reference's forks, so the actor does not imitate its own exploration).
      intervention_bc_weight: weight of the BC term on human-intervention rows (in the demo and
        the online table) relative to demonstrations (1: imitate the corrections like demos).
      awr_temperature: > 0: weigh every BC row by exp(advantage / (T scale)) (advantage-weighted
        regression: imitate the data actions the critic ranks above the policy's), capped at
        `awr_max_weight`; 0 = plain BC.
      awr_max_weight: cap of those weights.
      awr_scale: the batch statistic of Q that T is relative to: "std" (default: the spread of
        Q, unchanged by a shift of every Q) or "mean_abs" (mean |Q|, the earlier default; it
        shrinks when Q crosses zero, which piles the weights at the cap: WORKSPACE.md).
      q_normalize: divide the Q term by stop_gradient(mean |Q|) of the batch (TD3+BC), so
        q_weight is a BC:Q trade-off independent of the reward scale (reference code: no).
      actor_q_reduction: how the actor's Q term reduces the ensemble: "mean" (reference) or
        "min" (pessimistic).
      cql_n_actions: sampled actions per group (random / current / next) per state (10).
      cql_temp: temperature of the log-mean-exp (1).
      calql_bound_random: the Monte-Carlo lower bound also covers the uniform random actions
        (reference code: yes; the Cal-QL paper's code: no).
      discount: gamma of the TD target (0.98).
      tau: Polyak rate of the target critic (0.005).
      critic_actor_ratio: critic updates per actor update (2).
    """

    cql_alpha: float = 0.01
    bc_weight: float = 1.0
    q_weight: float = 0.1
    online_bc_weight: float = 1.0
    intervention_bc_weight: float = 1.0
    awr_temperature: float = 0.0
    awr_max_weight: float = 20.0
    awr_scale: str = "std"
    q_normalize: bool = False
    actor_q_reduction: str = "mean"
    cql_n_actions: int = 10
    cql_temp: float = 1.0
    calql_bound_random: bool = True
    discount: float = 0.98
    tau: float = 0.005
    critic_actor_ratio: int = 2

    def __post_init__(self):
        if self.awr_scale not in AWR_SCALES:
            raise ValueError(f"loss.awr_scale: unknown {self.awr_scale!r}; known: {', '.join(AWR_SCALES)}")
        if self.actor_q_reduction not in ("mean", "min"):
            raise ValueError(f"loss.actor_q_reduction: unknown {self.actor_q_reduction!r}; known: mean, min")


@dataclasses.dataclass(frozen=True)
class ReturnConfig:
    """How Monte-Carlo returns (the Cal-QL reference values) are computed from sparse rewards.

    A step's shaped reward is `reward * reward_scale + reward_bias` (reference code: +10 on
    success, -0.05 otherwise, i.e. scale 10.05 and bias -0.05 on 0/1 rewards).

    Attributes:
      gamma: discount of the return (should equal the TD discount).
      reward_scale, reward_bias: the shaping above (default: rewards as recorded).
    """

    gamma: float = 0.98
    reward_scale: float = 1.0
    reward_bias: float = 0.0


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation and bookkeeping.

    Attributes:
      batch_size: transitions per update (256).
      learning_rate: Adam learning rate, actor and critic (3e-4).
      policy_ema: the acting policy is an exponential moving average of the trained parameters
        (SFT: backbone and head; offline and online: the head), updated every learner step with
        this decay (`agents/averaging.py`; 0 = the trained parameters themselves; its warm-up:
        `policy_ema_warmup`). A policy fitted to a few demonstrations succeeds or fails
        in closed loop on small parameter changes, so SGD noise alone makes nearby checkpoints
        differ by tens of points. Default 0.998, measured through SFT -> Cal-ConRFT -> HIL-ConRFT
        against 0 on the same demos (pick_cube, insert_peg x 3 seeds, WORKSPACE.md): SFT +23 ± 19
        points, Cal-ConRFT +8 ± 16, HIL-ConRFT 0 ± 6 (paired, 95% intervals).
      policy_ema_warmup: True: warm the average's decay up, min(decay, (1 + t) / (10 + t)) at
        update t, so it forgets where the parameters started; False: the full decay from the
        first update, so the average starts at the stage's incoming policy and leaves it
        slowly. None (default): warm up only
        where the acting parameters start untrained (SFT's head, RLPD's fresh actor), not where
        a stage starts from a trained policy (Cal-ConRFT from SFT, HG-DAgger from SFT, HIL-ConRFT
        from Cal-ConRFT). Measured on Cal-ConRFT (WORKSPACE.md, "Six insert seeds, 200 more
        evaluation episodes, and the average's warm-up"): with the warm-up the average becomes
        the first update's parameters after a fresh optimiser's first step, and one insert_peg
        seed of six fell 18 points below its SFT policy (53.5 -> 35.5% over 200 episodes);
        without it none fell below by more than the noise (paired +2.8 ± 10.3 points).
      critic_warmup_steps: learner steps at the start of the offline and of the online stage
        that update the critic only: the actor does not follow a critic that has not yet fitted
        the stage's data (offline: from a random critic; online: the policy's own states). 0 = none.
      seed: master seed.
      log_every, eval_every, checkpoint_every: in learner steps.
      eval_episodes: episodes per periodic evaluation.
      keep_checkpoints: checkpoints kept on disk.
      data_loading: how SFT reads its demonstration windows (agents/step_data.py): "memory" holds
        the decoded split in RAM and samples it uniformly (a resumed run draws exactly the batches
        an uninterrupted one would); "stream" reads the TFDS files with tf.data (files and decoding
        in parallel, a shuffle buffer, prefetch) in bounded memory; "auto" (default) streams when
        the decoded train + held-out splits exceed `memory_budget_mb`.
      memory_budget_mb: the decoded size up to which "auto" holds the data in memory (4096).
      shuffle_buffer_mb: decoded bytes of windows in the streaming shuffle buffer (512).
      devices: the local JAX devices the offline/online learner update runs over, data-parallel (`agents/sharding.py`:
        batch rows sharded over a device mesh, parameters replicated): "" = all local devices
        (default), "N" = the first N, "0,2" = those device ids. Rows per learner step must be a
        multiple of the device count. Bookkeeping: a run may resume on another device count.
      replay_sampler_workers: threads sampling each Reverb table for the offline and online
        learner's batches (`ReplayConfig.sampler_workers`); 0 (default) = the replay layer's
        default (4, measured 1.25-1.5x the batches/s of 1). Bookkeeping: it changes how fast
        batches come, not which.
    """

    batch_size: int = 256
    learning_rate: float = 3e-4
    policy_ema: float = 0.998
    policy_ema_warmup: bool | None = None
    critic_warmup_steps: int = 0
    seed: int = 42
    log_every: int = 50
    eval_every: int = 1000
    checkpoint_every: int = 1000
    eval_episodes: int = 10
    keep_checkpoints: int = 3
    data_loading: str = "auto"
    memory_budget_mb: int = 4096
    shuffle_buffer_mb: int = 512
    devices: str = ""
    replay_sampler_workers: int = 0


# RL learner steps per jitted call: measured by tools/benchmark_online.py and tools/benchmark_agent.py
# (WORKSPACE.md, "Speed (#11)").
# Only for embedding-input networks: a `lax.scan` over pixel-encoder updates runs slower on XLA CPU
# than one update per call (tools/benchmark_agent.py, tiny, batch 64: 2.4 vs 5.9 updates/s).
STEPS_PER_DISPATCH = 4


@dataclasses.dataclass(frozen=True)
class OnlineConfig:
    """The online stage (HIL-ConRFT): replay mixing and pacing, warm-up, actor, evaluation, roles.

    Learning (checked to match when a run resumes):
      agent: the method the online stage runs (`agents/registry.py`): "conrft" (HIL-ConRFT, from
        an offline workdir), "hg_dagger" (consistency-BC on demos + interventions, no critic,
        from an SFT workdir) or "rlpd" (HIL-SERL: SAC, tanh-Gaussian actor, from an SFT workdir's
        backbone with a fresh actor and critic).
      online_fraction: share of each batch from the online table; the rest comes from the
        demo table (demonstrations + human interventions). 0.5 = RLPD's symmetric sampling.
      updates_per_env_step: critic updates (batches) each collected env step pays for, the
        update-to-data ratio (UTD) held by the online table's rate limiter; the actor is
        updated once per `LossConfig.critic_actor_ratio` of them.
      lockstep: the actor waits for the learner, so the UTD holds exactly whatever the speed
        of either side (None = on for simulators and Gymnasium envs, off for real robots,
        which must never wait).
      lockstep_lead: env steps the actor may run ahead of the learner's budget in lockstep.
      max_actor_lead: > 0: the actor blocks this many env steps ahead of the learner's budget
        (a robot too; lockstep sets it to `lockstep_lead`); 0 = never.
      min_online: online transitions before learning starts.
      reset_optimizer: start with fresh Adam states (the reference code does).
    Bookkeeping and deployment (may change on resume):
      gate: the check of the offline policy before the online stage (`agents/stage_gate.py`):
        "refuse" a clearly broken policy, "warn" only, or "off".
      gate_episodes: simulator evaluation episodes per policy in that check (0: none).
      env_steps: robot steps to collect.
      teleop: the human device (`scripted_intervention` on the simulator, `spacemouse`, ...).
      publish_every: learner steps between parameter publications to the actors.
      eval_every: env steps between the actor's periodic evaluations (0 = none; also one at
        the start and one at the end).
      eval_episodes: episodes per periodic evaluation.
      role: "both" (actor thread + learner in one process), "learner" (serves replay and
        parameters on `replay_port`, learns until every actor finished) or "actor" (acts on
        this machine against the learner's server at `replay_address`).
      replay_address: HOST:PORT of the learner's replay server (role actor).
      replay_port: port the learner's replay server listens on (0 = any free one).
      actor_index: this actor's slot (0 .. max_actors - 1); every actor of a run needs its own
        (a second actor on a slot whose claim is alive is refused, `datasets/replay/slots.py`).
      max_actors: actor slots the learner's server offers (`--actor_slots`, 8); an actor reads
        the number from the server.
      slot_lease_s: seconds without a renewal after which an actor's slot claim is stale (its
        actor died) and a restarted actor may take the slot over (5).
      retry_every_s: seconds between an actor's reconnection attempts to a dead replay server.
      params_secret_file: role actor: a copy of the learner's `<workdir>/params_secret`, the key
        that authenticates its parameter publications (`agents/parameters.py`).
      steps_per_dispatch: learner steps the online learner (and the offline one) runs per jitted
        call (`Learner.steps`, `lax.scan` over one sampled item of that many steps' rows): the
        Python dispatch, the host->device copy, the metrics read-back and XLA's buffers are paid
        once per call. 0 (default): chosen by `AgentConfig.steps_per_dispatch()`
        (STEPS_PER_DISPATCH, or 1 with pixel encoders).
        Publishing, logging and checkpoints happen between calls; the actor side of the UTD
        pacing is unchanged (the limiter counts samples, not calls).
    """

    agent: str = "conrft"
    online_fraction: float = 0.5
    updates_per_env_step: float = 1.0
    lockstep: bool | None = None
    lockstep_lead: int = 2
    max_actor_lead: int = 0
    min_online: int = 100
    reset_optimizer: bool = True
    gate: str = "refuse"
    gate_episodes: int = 10
    env_steps: int = 2000
    teleop: str = "scripted_intervention"
    publish_every: int = 10
    eval_every: int = 0
    eval_episodes: int = 5
    role: str = "both"
    replay_address: str = ""
    replay_port: int = 0
    actor_index: int = 0
    max_actors: int = 8
    slot_lease_s: float = 5.0
    retry_every_s: float = 2.0
    params_secret_file: str = ""
    steps_per_dispatch: int = 0

    BOOKKEEPING = ("gate", "gate_episodes", "env_steps", "teleop", "publish_every", "eval_every", "eval_episodes", "role", "replay_address",
                   "replay_port", "actor_index", "max_actors", "slot_lease_s", "retry_every_s", "params_secret_file",
                   "steps_per_dispatch")

    def actor_lead(self, env: str) -> int:
        """Env steps the actor may run ahead of the learner's budget on `env` (0: unlimited)."""
        lockstep = self.lockstep if self.lockstep is not None else not env.startswith("franka:")
        return self.lockstep_lead if lockstep else self.max_actor_lead


@dataclasses.dataclass(frozen=True)
class SACConfig:
    """The RLPD / HIL-SERL baseline's actor (`agents/rlpd.py`): a tanh-Gaussian policy over the
    critic's inputs (the cached embedding + proprio, or its own pixel encoders + proprio).

    Attributes:
      hidden: actor MLP hidden sizes.
      log_std_min, log_std_max: range of the Gaussian's log standard deviation.
      init_temperature: the entropy temperature alpha at the start (auto-tuned afterwards);
        0.01, HIL-SERL's `temperature_init`.
      target_entropy: the temperature's target entropy (0 = -action_dim, SAC's default).
      entropy_backup: subtract alpha log pi(a'|s') in the TD target (SAC's soft backup). False,
        as HIL-SERL's `backup_entropy`: with sparse 0/1 rewards the soft backup's entropy bonus,
        summed over the horizon, outweighs the reward (measured: Q of successful steps 6.7 on
        pick_cube with alpha 0.1 and the soft backup, the policy alone 0% on 3 seeds).
    """

    hidden: tuple[int, ...] = (256, 256)
    log_std_min: float = -5.0
    log_std_max: float = 2.0
    init_temperature: float = 0.01
    target_entropy: float = 0.0
    entropy_backup: bool = False


@dataclasses.dataclass(frozen=True)
class AgentConfig:
    """Everything the agent needs; see the member dataclasses."""

    name: str = "small"
    backbone: BackboneConfig = BackboneConfig()
    head: ConsistencyConfig = ConsistencyConfig()
    critic: CriticConfig = CriticConfig()
    loss: LossConfig = LossConfig()
    returns: ReturnConfig = ReturnConfig()
    train: TrainConfig = TrainConfig()
    online: OnlineConfig = OnlineConfig()
    sac: SACConfig = SACConfig()

    def steps_per_dispatch(self) -> int:
        """Learner steps per jitted call of the offline and the online stage:
        `online.steps_per_dispatch` if set, else STEPS_PER_DISPATCH, or 1 when the critic convolves
        pixels (a scan over conv updates is slower on XLA CPU than single calls). The offline stage
        takes 1 where the run's steps do not fall on whole calls (`training.offline_steps_per_call`)."""
        if self.online.steps_per_dispatch:
            return self.online.steps_per_dispatch
        return 1 if self.critic.input == "pixels" else STEPS_PER_DISPATCH


LOSS_PRESETS = ("stable", "paper", "reference")


def loss_preset(name: str = "stable", stage: str = "offline") -> LossConfig:
    """Loss weights of a stage: `stable` (default, measured: WORKSPACE.md, "Making fine-tuning
    reliable"), `paper` (Tables V-XII) or `reference` (cccedric/conrft code).

    offline (Cal-ConRFT): paper alpha=0.01, beta=1.0, eta=0.1; reference alpha=0.1, beta=1.0, eta=0.1;
      stable alpha=0.01, beta=1.0, eta=0: the Cal-QL critic is trained, the actor only by BC (the
      reference code's stage I before June 2025): the actor does not follow a critic fitted to
      20 demonstrations into states no demonstration shows.
    online (HIL-ConRFT): paper beta=0.5, eta=1.0; reference beta=0.1, eta=1.0; no conservative term;
      stable beta=0.5, eta=0, BC on the whole batch weighted by advantage (awr_temperature 0.1):
      the actor improves from the data the critic ranks best instead of following its gradient.
    sft: BC only (beta=1, eta=0, no critic term).
    """
    table = {
        ("paper", "offline"): dict(cql_alpha=0.01, bc_weight=1.0, q_weight=0.1),
        ("reference", "offline"): dict(cql_alpha=0.1, bc_weight=1.0, q_weight=0.1),
        ("paper", "online"): dict(cql_alpha=0.0, bc_weight=0.5, q_weight=1.0),
        ("reference", "online"): dict(cql_alpha=0.0, bc_weight=0.1, q_weight=1.0),
        ("paper", "sft"): dict(cql_alpha=0.0, bc_weight=1.0, q_weight=0.0),
        ("reference", "sft"): dict(cql_alpha=0.0, bc_weight=1.0, q_weight=0.0),
        ("stable", "offline"): dict(cql_alpha=0.01, bc_weight=1.0, q_weight=0.0),
        ("stable", "online"): dict(cql_alpha=0.0, bc_weight=0.5, q_weight=0.0, online_bc_weight=1.0,
                                   awr_temperature=0.1),
        ("stable", "sft"): dict(cql_alpha=0.0, bc_weight=1.0, q_weight=0.0),
    }
    if (name, stage) not in table:
        raise ValueError(f"no loss preset {name!r} for stage {stage!r}; presets: {', '.join(LOSS_PRESETS)}; "
                         f"stages: sft, offline, online")
    return LossConfig(**table[(name, stage)])


def get_config(name: str = "small") -> AgentConfig:
    """`small`: Octo-small widths (384, 12 layers, 6 heads). `tiny`: for tests and CPU demos."""
    if name == "small":
        return AgentConfig(name="small")
    if name == "tiny":
        return AgentConfig(
            name="tiny",
            backbone=BackboneConfig(width=64, depth=2, heads=2, patch_size=16, stem_features=0,
                                    max_text_tokens=12, vocab_size=512),
            head=ConsistencyConfig(hidden=(128, 128), time_dim=16, proprio_dim=32),
            critic=CriticConfig(hidden=(128, 128), encoder_widths=(8, 16, 32, 64), spatial_features=4,
                                bottleneck=64, proprio_dim=32),
            sac=SACConfig(hidden=(128, 128)),
            train=TrainConfig(batch_size=64, log_every=20, eval_every=500, checkpoint_every=500,
                              eval_episodes=5),
        )
    raise ValueError(f"unknown config {name!r}; known: tiny, small")


def config_to_json(config: AgentConfig) -> str:
    """The whole config as JSON (stored with checkpoints and exports)."""
    import json

    return json.dumps(dataclasses.asdict(config), sort_keys=True)


SECTIONS = {"backbone": BackboneConfig, "head": ConsistencyConfig, "critic": CriticConfig, "loss": LossConfig,
            "returns": ReturnConfig, "train": TrainConfig, "online": OnlineConfig, "sac": SACConfig}


def config_from_json(text: str) -> AgentConfig:
    """Inverse of `config_to_json`. A section or field the JSON lacks (written by an older
    version) takes its default; a field this version no longer has is dropped."""
    import json

    data = json.loads(text)
    assert set(SECTIONS) == {f.name for f in dataclasses.fields(AgentConfig)} - {"name"}

    def section(cls, values: dict):
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in known})

    return AgentConfig(name=data["name"], **{k: section(cls, data.get(k, {})) for k, cls in SECTIONS.items()})


def with_overrides(config: AgentConfig, overrides) -> AgentConfig:
    """`config` with "section.field=value" overrides applied (e.g. "loss.q_weight=0.3",
    "head.action_bound=clip", "critic.hidden=256,256"); values are parsed as the field's type.
    Raises ValueError naming an unknown section or field or a value that does not parse."""
    for text in overrides:
        section_name = _override_section(text)
        section = override_section(getattr(config, section_name), section_name, [text])
        config = dataclasses.replace(config, **{section_name: section})
    return config


def override_section(section, section_name: str, overrides):
    """One section dataclass (e.g. a stage's LossConfig) with the overrides of `section_name`
    applied; overrides of other sections are skipped."""
    for text in overrides:
        if _override_section(text) != section_name:
            continue
        key, _, raw = text.partition("=")
        field_name = key.strip().partition(".")[2]
        fields = {f.name for f in dataclasses.fields(section)}
        if field_name not in fields:
            raise ValueError(f"override {text!r}: {section_name} has no field {field_name!r}; fields: {sorted(fields)}")
        value = _parse_like(getattr(section, field_name), raw.strip(), text)
        section = dataclasses.replace(section, **{field_name: value})
    return section


def _override_section(text: str) -> str:
    key, sep, _ = text.partition("=")
    section_name = key.strip().partition(".")[0]
    if not sep or section_name not in SECTIONS:
        raise ValueError(f"override {text!r}: expected SECTION.FIELD=VALUE with SECTION one of {sorted(SECTIONS)}")
    return section_name


def _parse_like(current, raw: str, text: str):
    """`raw` parsed as the type of `current` (bool, int, float, str, tuple of ints/floats, None)."""
    try:
        if raw.lower() in ("none", "auto") and (current is None or isinstance(current, bool)):
            return None
        if isinstance(current, bool) or current is None:
            if raw.lower() not in ("true", "false", "1", "0"):
                raise ValueError(raw)
            return raw.lower() in ("true", "1")
        if isinstance(current, tuple):
            kind = type(current[0]) if current else float
            return tuple(kind(part) for part in raw.split(",") if part)
        return type(current)(raw)
    except ValueError:
        raise ValueError(f"override {text!r}: {raw!r} is not a {type(current).__name__}") from None

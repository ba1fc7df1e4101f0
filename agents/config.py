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


@dataclasses.dataclass(frozen=True)
class ConsistencyConfig:
    """Consistency-policy action head (EDM/Karras parameterisation, ConRFT §3).

    Attributes:
      hidden: MLP hidden sizes (Dense -> LayerNorm -> tanh each).
      time_dim: width of the noise-level (time) embedding.
      proprio_dim: width of the proprio projection (Dense -> LayerNorm -> tanh).
      num_scales: M, number of Karras noise levels (40).
      sigma_min, sigma_max, sigma_data, rho: Karras schedule constants (0.002, 80, 0.5, 7).
      clip_denoised: clip every output to the action box [-1, 1].
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
    clip_denoised: bool = True
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
    cql_n_actions: int = 10
    cql_temp: float = 1.0
    calql_bound_random: bool = True
    discount: float = 0.98
    tau: float = 0.005
    critic_actor_ratio: int = 2


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
      online_fraction: share of each batch from the online table (offline 0.0, online 0.5).
      seed: master seed.
      log_every, eval_every, checkpoint_every: in learner steps.
      eval_episodes: episodes per periodic evaluation.
      keep_checkpoints: checkpoints kept on disk.
    """

    batch_size: int = 256
    learning_rate: float = 3e-4
    online_fraction: float = 0.0
    seed: int = 42
    log_every: int = 50
    eval_every: int = 1000
    checkpoint_every: int = 1000
    eval_episodes: int = 10
    keep_checkpoints: int = 3


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


def loss_preset(name: str = "paper", stage: str = "offline") -> LossConfig:
    """Loss weights of a stage: `paper` (Tables V-XII) or `reference` (cccedric/conrft code).

    offline (Cal-ConRFT): paper alpha=0.01, beta=1.0, eta=0.1; reference alpha=0.1, beta=1.0, eta=0.1.
    online (HIL-ConRFT): paper beta=0.5, eta=1.0; reference beta=0.1, eta=1.0; no conservative term.
    sft: BC only (beta=1, eta=0, no critic term).
    """
    table = {
        ("paper", "offline"): dict(cql_alpha=0.01, bc_weight=1.0, q_weight=0.1),
        ("reference", "offline"): dict(cql_alpha=0.1, bc_weight=1.0, q_weight=0.1),
        ("paper", "online"): dict(cql_alpha=0.0, bc_weight=0.5, q_weight=1.0),
        ("reference", "online"): dict(cql_alpha=0.0, bc_weight=0.1, q_weight=1.0),
        ("paper", "sft"): dict(cql_alpha=0.0, bc_weight=1.0, q_weight=0.0),
        ("reference", "sft"): dict(cql_alpha=0.0, bc_weight=1.0, q_weight=0.0),
    }
    if (name, stage) not in table:
        raise ValueError(f"no loss preset {name!r} for stage {stage!r}; presets: paper, reference; "
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
            train=TrainConfig(batch_size=64, log_every=20, eval_every=500, checkpoint_every=500,
                              eval_episodes=5),
        )
    raise ValueError(f"unknown config {name!r}; known: tiny, small")


def config_to_json(config: AgentConfig) -> str:
    """The whole config as JSON (stored with checkpoints and exports)."""
    import json

    return json.dumps(dataclasses.asdict(config), sort_keys=True)


def config_from_json(text: str) -> AgentConfig:
    """Inverse of `config_to_json`."""
    import json

    data = json.loads(text)
    members = {f.name: f.type for f in dataclasses.fields(AgentConfig) if f.name != "name"}
    classes = {"backbone": BackboneConfig, "head": ConsistencyConfig, "critic": CriticConfig,
               "loss": LossConfig, "returns": ReturnConfig, "train": TrainConfig}
    assert set(classes) == set(members)
    tupled = lambda d: {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
    return AgentConfig(name=data["name"], **{k: cls(**tupled(data[k])) for k, cls in classes.items()})

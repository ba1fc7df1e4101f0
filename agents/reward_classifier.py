"""A binary success classifier on camera images: the learned sparse reward (HIL-SERL style).

Model (`RewardClassifier`): per camera the pixel critic's `ImageEncoder` (ResNet-10-like trunk ->
spatial learned embeddings -> dropout -> Dense/LayerNorm/tanh), the cameras' features
concatenated -> MLP -> one logit. Inputs are observation dicts (`image_<camera>` uint8
[B, H, W, 3]); images of another size are resized to `config.image_size` first.

Training: binary cross-entropy with Adam (`init_train_state`, `make_train_step`, jitted), on
class-balanced batches (`BalancedSampler`: success frames are rare) augmented by the critic's
random crop/shift plus brightness/contrast jitter (`augment`).

A trained classifier is a directory (`save_classifier` / `load_classifier`): `params.msgpack`
(flax msgpack) and `classifier.json` (format, config, free-form metadata). Loading needs only
this module; `TrainedClassifier.predict_proba(observation or batch)` is jitted.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from pathlib import Path
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vlarft.agents.config import CriticConfig
from vlarft.agents.networks.common import MLP, check_tree, dense, load_tree, save_tree
from vlarft.agents.networks.critic import ImageEncoder, random_crop_observation

FORMAT = "vlarft.reward_classifier"
FORMAT_VERSION = 1
CONFIG_FILE = "classifier.json"
PARAMS_FILE = "params.msgpack"


@dataclasses.dataclass(frozen=True)
class RewardClassifierConfig:
    """Classifier architecture, augmentation and training.

    Attributes:
      cameras: cameras the classifier looks at (observation keys `image_<camera>`); empty = every
        camera of the training data (the trainer fills them in before building the model).
      image_size: (height, width) images are resized to; empty = the recorded size (filled in).
      encoder_widths: channels of the four ResNet stages of each camera's encoder (the critic's
        tiny preset; ResNet-10 proper is 64..512).
      spatial_features: learned spatial-embedding features per channel.
      bottleneck: per-camera feature width.
      hidden: MLP hidden sizes between the concatenated camera features and the logit.
      dropout: dropout on the image features while training.
      crop_pad: random crop/shift augmentation, pixels of padding (edge mode) at `image_size`.
      brightness: each training image is scaled by a factor drawn from U(1 - b, 1 + b).
      contrast: each training image's deviation from its mean is scaled by U(1 - c, 1 + c).
      batch_size: frames per update.
      positive_fraction: share of success frames in every batch (class-balanced sampling).
      learning_rate: Adam learning rate.
      steps: updates.
      seed: parameter initialisation, augmentation and sampling seed.
    """

    cameras: tuple[str, ...] = ()
    image_size: tuple[int, ...] = ()
    encoder_widths: tuple[int, ...] = (8, 16, 32, 64)
    spatial_features: int = 4
    bottleneck: int = 64
    hidden: tuple[int, ...] = (64,)
    dropout: float = 0.1
    crop_pad: int = 4
    brightness: float = 0.2
    contrast: float = 0.2
    batch_size: int = 64
    positive_fraction: float = 0.5
    learning_rate: float = 3e-4
    steps: int = 2000
    seed: int = 0

    def to_json(self) -> dict:
        """The config as a JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping, source: str = "config") -> RewardClassifierConfig:
        """Inverse of `to_json`; unknown fields raise ValueError naming `source`."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{source}: unknown classifier config field(s) {unknown}; known: {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    def check_built(self) -> None:
        """Raise ValueError unless `cameras` and `image_size` are filled in."""
        if not self.cameras:
            raise ValueError("RewardClassifierConfig.cameras is empty: name the cameras to classify")
        if len(self.image_size) != 2:
            raise ValueError(f"RewardClassifierConfig.image_size must be (height, width), got {self.image_size}")


def image_keys(config: RewardClassifierConfig) -> list[str]:
    """Observation keys the classifier reads, in the config's camera order."""
    return [f"image_{camera}" for camera in config.cameras]


def resize_images(images, size: tuple[int, ...]):
    """[..., H, W, 3] images as float32 (values 0..255) at `size` (bilinear; same size: a cast)."""
    images = jnp.asarray(images).astype(jnp.float32)
    if tuple(images.shape[-3:-1]) == tuple(size):
        return images
    return jax.image.resize(images, images.shape[:-3] + tuple(size) + images.shape[-1:], "linear")


class RewardClassifier(nn.Module):
    """Success logit [B] of observations {`image_<camera>`: [B, H, W, 3]} (see the module docstring).

    Parameters: `encoder_<camera>` (the critic's `ImageEncoder` layout), `mlp`, `logit`.
    """

    config: RewardClassifierConfig

    @nn.compact
    def __call__(self, observation: Mapping[str, jax.Array], train: bool = False):
        cfg = self.config
        encoder = CriticConfig(encoder_widths=cfg.encoder_widths, spatial_features=cfg.spatial_features,
                               bottleneck=cfg.bottleneck, dropout=cfg.dropout)
        features = [ImageEncoder(encoder, name=f"encoder_{camera}")(resize_images(observation[key], cfg.image_size),
                                                                     train)
                    for camera, key in zip(cfg.cameras, image_keys(cfg))]
        x = MLP(cfg.hidden, name="mlp")(jnp.concatenate(features, axis=-1))
        return dense(1, name="logit")(x)[..., 0]


def example_observation(config: RewardClassifierConfig, batch: int = 1) -> dict[str, np.ndarray]:
    """All-zero images of the classifier's cameras and size (for initialisation and shape checks)."""
    config.check_built()
    return {key: np.zeros((batch, *config.image_size, 3), np.uint8) for key in image_keys(config)}


def init_params(config: RewardClassifierConfig, seed: int | None = None):
    """Fresh parameters for `config`."""
    rng = jax.random.PRNGKey(config.seed if seed is None else seed)
    return RewardClassifier(config).init(rng, example_observation(config))["params"]


# ---------------------------------------------------------------- augmentation


def color_jitter(images, rng, brightness: float, contrast: float):
    """Per-image brightness and contrast jitter of float [..., H, W, 3] images (0..255), clipped.

    brightness: scale by U(1 - b, 1 + b); contrast: deviation from the image mean scaled by
    U(1 - c, 1 + c). Pure and jit-able.
    """
    shape = images.shape[:-3] + (1, 1, 1)
    rng_b, rng_c = jax.random.split(rng)
    scale = jax.random.uniform(rng_b, shape, minval=1.0 - brightness, maxval=1.0 + brightness)
    spread = jax.random.uniform(rng_c, shape, minval=1.0 - contrast, maxval=1.0 + contrast)
    images = images * scale
    mean = images.mean(axis=(-3, -2, -1), keepdims=True)
    return jnp.clip((images - mean) * spread + mean, 0.0, 255.0)


def augment(observation: Mapping[str, jax.Array], rng, config: RewardClassifierConfig) -> dict:
    """Training augmentation of the classifier's images: resize, random crop/shift, colour jitter."""
    rng_crop, rng_color = jax.random.split(rng)
    images = {key: resize_images(observation[key], config.image_size) for key in image_keys(config)}
    images = random_crop_observation(images, rng_crop, config.crop_pad)
    rngs = jax.random.split(rng_color, len(images))
    return {key: color_jitter(images[key], r, config.brightness, config.contrast)
            for key, r in zip(image_keys(config), rngs)}


# ---------------------------------------------------------------- training


class BalancedSampler:
    """Batches of frame indices with `round(batch_size * positive_fraction)` success frames.

    Both classes are drawn uniformly with replacement, so rare success frames are seen often.
    """

    def __init__(self, labels: np.ndarray, batch_size: int, positive_fraction: float = 0.5, seed: int = 0):
        labels = np.asarray(labels, bool)
        self.positives, self.negatives = np.flatnonzero(labels), np.flatnonzero(~labels)
        if not len(self.positives) or not len(self.negatives):
            raise ValueError(f"training needs success and failure frames; got {len(self.positives)} success "
                             f"and {len(self.negatives)} failure frame(s)")
        if not 0.0 < positive_fraction < 1.0:
            raise ValueError(f"positive_fraction must be in (0, 1), got {positive_fraction}")
        self.num_positive = min(batch_size - 1, max(1, round(batch_size * positive_fraction)))
        self.batch_size = batch_size
        self._rng = np.random.default_rng(seed)

    def sample(self) -> np.ndarray:
        """Indices [batch_size]: the positives first, then the negatives."""
        pos = self._rng.choice(self.positives, self.num_positive)
        neg = self._rng.choice(self.negatives, self.batch_size - self.num_positive)
        return np.concatenate([pos, neg])


def init_train_state(config: RewardClassifierConfig, params=None):
    """A flax `TrainState` (Adam) for `config`, from `params` or a fresh initialisation."""
    import optax
    from flax.training import train_state

    model = RewardClassifier(config)
    return train_state.TrainState.create(apply_fn=model.apply, params=init_params(config) if params is None else params,
                                         tx=optax.adam(config.learning_rate))


def make_train_step(config: RewardClassifierConfig):
    """The jitted update `(state, observation, labels) -> (state, metrics)`.

    observation: {`image_<camera>`: uint8 [B, H, W, 3]}; labels: bool/float [B]. The step's
    augmentation and dropout randomness is `fold_in(PRNGKey(config.seed), state.step)`.
    """
    import optax

    model = RewardClassifier(config)
    base_rng = jax.random.PRNGKey(config.seed)

    def loss_fn(params, observation, labels, rng):
        rng_aug, rng_drop = jax.random.split(rng)
        logits = model.apply({"params": params}, augment(observation, rng_aug, config), train=True,
                             rngs={"dropout": rng_drop})
        loss = optax.sigmoid_binary_cross_entropy(logits, labels).mean()
        return loss, logits

    @jax.jit
    def step(state, observation, labels):
        labels = jnp.asarray(labels, jnp.float32)
        rng = jax.random.fold_in(base_rng, state.step)
        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, observation, labels, rng)
        accuracy = jnp.mean((logits > 0) == (labels > 0.5))
        return state.apply_gradients(grads=grads), {"loss": loss, "accuracy": accuracy}

    return step


# ---------------------------------------------------------------- inference and files


class TrainedClassifier:
    """A classifier ready to predict: config, parameters and the metadata stored with them."""

    def __init__(self, config: RewardClassifierConfig, params: Any, meta: Mapping | None = None):
        config.check_built()
        self.config, self.params, self.meta = config, params, dict(meta or {})
        model = RewardClassifier(config)
        self._proba = jax.jit(lambda params, obs: jax.nn.sigmoid(model.apply({"params": params}, obs)))

    @property
    def cameras(self) -> tuple[str, ...]:
        return self.config.cameras

    def predict_proba(self, observation: Mapping[str, Any], chunk: int = 256) -> float | np.ndarray:
        """p(success) of one observation (images [H, W, 3]: a float) or a batch ([B, H, W, 3]: [B]).

        Only the classifier's `image_<camera>` entries are read; batches above `chunk` frames run
        in padded chunks of `chunk` (one compilation).
        """
        keys = image_keys(self.config)
        missing = [k for k in keys if k not in observation]
        if missing:
            raise KeyError(f"observation has no {missing} (has {sorted(observation)}); the classifier "
                           f"reads cameras {list(self.config.cameras)}")
        images = {k: np.asarray(observation[k]) for k in keys}
        single = images[keys[0]].ndim == 3
        if single:
            return float(self._proba(self.params, {k: v[None] for k, v in images.items()})[0])
        total = len(images[keys[0]])
        if total <= chunk:
            return np.asarray(self._proba(self.params, images))
        out = []
        for start in range(0, total, chunk):
            part = {k: v[start:start + chunk] for k, v in images.items()}
            pad = chunk - len(part[keys[0]])
            part = {k: np.concatenate([v, np.repeat(v[-1:], pad, 0)]) if pad else v for k, v in part.items()}
            out.append(np.asarray(self._proba(self.params, part))[:chunk - pad])
        return np.concatenate(out)


def save_classifier(directory: str | os.PathLike, params: Any, config: RewardClassifierConfig,
                    meta: Mapping | None = None) -> Path:
    """Writes `params.msgpack` and `classifier.json` into `directory` (each file atomically)."""
    config.check_built()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_tree(params, directory / PARAMS_FILE)
    document = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": config.to_json(),
                "meta": dict(meta or {})}
    tmp = directory / f".{CONFIG_FILE}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(document, indent=1, sort_keys=True))
    os.replace(tmp, directory / CONFIG_FILE)
    return directory


def load_classifier(directory: str | os.PathLike) -> TrainedClassifier:
    """Reads a directory written by `save_classifier`; errors name the file and what is wrong."""
    directory = Path(directory)
    config_path, params_path = directory / CONFIG_FILE, directory / PARAMS_FILE
    for path in (config_path, params_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; is {directory} a reward classifier directory "
                                    f"(tools/train_reward_classifier.py --out_dir)?")
    try:
        document = json.loads(config_path.read_text())
        if document.get("format") != FORMAT or document.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"format {document.get('format')!r} version {document.get('format_version')}, "
                             f"expected {FORMAT!r} version {FORMAT_VERSION}")
        config = RewardClassifierConfig.from_json(document["config"], str(config_path))
        config.check_built()
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise ValueError(f"{config_path}: not a reward classifier config ({e})") from None
    try:
        loaded = load_tree(params_path)
    except Exception as e:  # msgpack raises several unrelated types on damage
        raise ValueError(f"{params_path}: unreadable parameters ({type(e).__name__}: {e})") from None
    shapes = jax.eval_shape(functools.partial(init_params, config))
    params = check_tree(loaded, shapes, str(params_path))
    return TrainedClassifier(config, params, document.get("meta"))

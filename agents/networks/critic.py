"""Q-function ensemble over (observation features, action), and the pixel encoder it may use.

`Critic.config.input`:
  * "embedding": features = [embedding, proprio_proj(state)], from observation["embedding"] (the
    cached backbone embedding) and observation["state"];
  * "pixels": per camera its own ResNet-10-like encoder on observation["image_<cam>"] (uint8
    [B, H, W, 3]) -> spatial learned embeddings -> dropout -> Dense -> LayerNorm -> tanh; the
    cameras' features are concatenated with proprio_proj(state). Encoders are shared by the K
    members; only the MLP heads are ensembled.
Q is [K, B] for actions [B, A] and [K, B, n] for actions [B, n, A] (observation encoded once).
Augment pixels with `random_crop` / `random_crop_observation` before calling the critic.
"""

from __future__ import annotations

import math
import os
from typing import Mapping, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from vlarft.agents.config import CriticConfig
from vlarft.agents.networks.common import (ProprioProjection, broadcast_features, check_tree, dense, load_tree,
                                           save_tree, xavier, zeros)
from vlarft.agents.networks.rows import RowsDense, RowsLayerNorm, add_to_rows, rows_matmul

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class ResidualBlock(nn.Module):
    """Basic ResNet block: two 3x3 convs with GroupNorm, projection shortcut when the shape changes."""

    features: int
    stride: int = 1
    groups: int = 4

    @nn.compact
    def __call__(self, x):
        conv = lambda f, k, s, name: nn.Conv(f, (k, k), (s, s), padding="SAME", use_bias=False,
                                             kernel_init=conv_init, name=name)
        y = nn.relu(nn.GroupNorm(self.groups, name="norm1")(conv(self.features, 3, self.stride, "conv1")(x)))
        y = nn.GroupNorm(self.groups, name="norm2")(conv(self.features, 3, 1, "conv2")(y))
        if x.shape[-1] != self.features or self.stride != 1:
            x = nn.GroupNorm(self.groups, name="proj_norm")(conv(self.features, 1, self.stride, "proj")(x))
        return nn.relu(x + y)


def max_pool_same(x, window: int, stride: int):
    """`nn.max_pool(x, (window, window), (stride, stride), padding="SAME")` on [N, H, W, C], as the
    running maximum of window x window strided slices. Same values; its gradient is elementwise
    selects, where reduce_window's gradient (select_and_scatter) runs on XLA CPU as a scalar loop
    over every output element (15% of a pixel critic update's op time, tiny, batch 64; the
    update 1.14x faster without it)."""
    (lo_h, hi_h), (lo_w, hi_w) = jax.lax.padtype_to_pads(x.shape[1:3], (window, window), (stride, stride), "SAME")
    padded = jnp.pad(x, ((0, 0), (lo_h, hi_h), (lo_w, hi_w), (0, 0)), constant_values=-jnp.inf)
    out_h, out_w = -(-x.shape[1] // stride), -(-x.shape[2] // stride)
    out = None
    for i in range(window):
        for j in range(window):
            part = jax.lax.slice(padded, (0, i, j, 0),
                                 (x.shape[0], i + stride * (out_h - 1) + 1, j + stride * (out_w - 1) + 1, x.shape[3]),
                                 (1, stride, stride, 1))
            out = part if out is None else jnp.maximum(out, part)
    return out


class ResNet10Encoder(nn.Module):
    """ResNet-10-like trunk: 7x7/2 stem, GroupNorm, ReLU, 3x3/2 max-pool, 4 single-block stages.

    Input: images [..., H, W, 3] with values 0..255 (uint8); scaled to [0, 1] and normalised with
    the ImageNet mean/std. Output: feature map [..., H/32, W/32, widths[-1]] (rounded up).
    """

    widths: Sequence[int] = (64, 128, 256, 512)
    groups: int = 4

    @nn.compact
    def __call__(self, images):
        lead = images.shape[:-3]
        x = images.reshape((-1,) + images.shape[-3:]).astype(jnp.float32) / 255.0
        x = (x - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)
        x = nn.Conv(self.widths[0], (7, 7), (2, 2), padding=[(3, 3), (3, 3)], use_bias=False,
                    kernel_init=conv_init, name="stem")(x)
        x = nn.relu(nn.GroupNorm(self.groups, name="stem_norm")(x))
        x = max_pool_same(x, 3, 2)
        for i, width in enumerate(self.widths):
            x = ResidualBlock(width, stride=1 if i == 0 else 2, groups=self.groups, name=f"stage{i + 1}")(x)
        return x.reshape(lead + x.shape[1:])


class SpatialLearnedEmbeddings(nn.Module):
    """[B, H, W, C] -> [B, C * F]: per channel, F learned spatial weightings summed over H, W."""

    num_features: int

    @nn.compact
    def __call__(self, features):
        h, w, c = features.shape[-3:]
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (h, w, c, self.num_features))
        out = jnp.einsum("...hwc,hwcf->...cf", features, kernel)
        return out.reshape(out.shape[:-2] + (c * self.num_features,))


class ImageEncoder(nn.Module):
    """One camera: ResNet10Encoder ("resnet") -> spatial embeddings -> dropout -> Dense/LN/tanh."""

    config: CriticConfig

    @nn.compact
    def __call__(self, images, train: bool = False):
        cfg = self.config
        x = ResNet10Encoder(cfg.encoder_widths, name="resnet")(images)
        x = SpatialLearnedEmbeddings(cfg.spatial_features, name="spatial")(x)
        x = nn.Dropout(cfg.dropout)(x, deterministic=not train)
        return jnp.tanh(nn.LayerNorm(name="bottleneck_norm")(dense(cfg.bottleneck, name="bottleneck")(x)))


class PairDense(nn.Module):
    """`dense` on concat([features, actions]), computed part by part: the features' share once
    per observation, broadcast over its actions. Same parameters (kernel [F + A, H], bias) and
    result as the Dense of the concatenation, without building the [B, n, F + A] input (copies
    that took most of a Cal-QL critic update's time on CPU, issue #11)."""

    features: int

    @nn.compact
    def __call__(self, observation_features, actions):
        width = observation_features.shape[-1]
        kernel = self.param("kernel", xavier, (width + actions.shape[-1], self.features))
        bias = self.param("bias", zeros, (self.features,))
        per_observation = observation_features @ kernel[:width]
        rows = broadcast_features(per_observation, actions.shape[:-1]) + rows_matmul(actions, kernel[width:])
        # The bias goes on the B x n rows, so its gradient is one `column_sums` over all of them.
        # Added per observation, XLA merged its sum with the sum over each observation's actions
        # into one windowed reduction over the B x n rows (6 ms of a `small` Cal-QL update).
        return add_to_rows(rows, bias)


class PairMLP(nn.Module):
    """`MLP(hidden)` (activate final) on concat([features, actions]), its first layer a
    `PairDense`; the parameter tree is MLP's (Dense_i, LayerNorm_i). Returns [rows, H]: the
    actions' leading axes flattened into one."""

    hidden: Sequence[int]

    @nn.compact
    def __call__(self, features, actions):
        x = PairDense(self.hidden[0], name="Dense_0")(features, actions)
        x = x.reshape(-1, x.shape[-1])  # [B x n, H]: one row axis (see `rows_matmul`)
        x = jnp.tanh(RowsLayerNorm(name="LayerNorm_0")(x))
        for i, size in enumerate(self.hidden[1:], 1):
            x = jnp.tanh(RowsLayerNorm(name=f"LayerNorm_{i}")(RowsDense(size, name=f"Dense_{i}")(x)))
        return x


class QMember(nn.Module):
    """One ensemble member: MLP (activate final) on [features, action] -> Dense(1); returns [...]
    (last axis squeezed)."""

    hidden: Sequence[int]

    @nn.compact
    def __call__(self, features, actions):
        rows = PairMLP(self.hidden, name="mlp")(features, actions)
        return dense(1, name="q")(rows)[:, 0].reshape(actions.shape[:-1])


# From this many scored rows (states x actions) per member up, `QEnsemble` applies its members
# one after the other: Cal-QL's 256 states x 31 actions. Below it, `vmap` is as fast and compiles
# ~1 s quicker per learner program (tiny, batch 16-64; WORKSPACE, Speed).
MEMBERWISE_MIN_ROWS = 2048


class QEnsemble(nn.Module):
    """K `QMember`s, independently initialised. Their parameters are stacked on a leading K axis
    (`mlp`, `q`: the tree `nn.vmap(QMember)` makes, so checkpoints are unchanged). With many rows
    (Cal-QL scores 31 actions per state; `memberwise_min_rows`) the members are applied one after
    the other, so every dot is a plain matrix product (see `rows_matmul`): ~1.2x a Cal-QL update
    over `vmap`. With fewer rows (one action per state, small batches) they are applied at once
    (`vmap`), which is as fast or faster there and compiles quicker (WORKSPACE, Speed)."""

    size: int
    hidden: Sequence[int]
    memberwise_min_rows: int = MEMBERWISE_MIN_ROWS

    @nn.compact
    def __call__(self, features, actions):
        member = QMember(self.hidden, parent=None)

        def stacked(part: str):
            def init(key):
                keys = jax.random.split(key, self.size)
                return jax.vmap(lambda k: member.init(k, features, actions)["params"][part])(keys)
            return self.param(part, init)

        params = {part: stacked(part) for part in ("mlp", "q")}
        q = lambda member_params: member.apply({"params": member_params}, features, actions)
        if math.prod(actions.shape[:-1]) < self.memberwise_min_rows:
            return jax.vmap(q)(params)
        return jnp.stack([q(jax.tree_util.tree_map(lambda p: p[k], params)) for k in range(self.size)])


class Critic(nn.Module):
    """Ensemble of K Q-functions; see the module docstring for inputs and shapes.

    Parameter layout: `encoder_<cam>` (pixels mode; its `resnet` subtree is what
    `load_encoder_params` fills), `proprio`, `ensemble` (every leaf has a leading K axis).
    """

    config: CriticConfig
    cameras: tuple[str, ...] = ()

    def setup(self):
        cfg = self.config
        if cfg.input not in ("embedding", "pixels"):
            raise ValueError(f"CriticConfig.input must be 'embedding' or 'pixels', got {cfg.input!r}")
        if cfg.input == "pixels":
            if not self.cameras:
                raise ValueError("a pixels critic needs at least one camera")
            self.encoder = {cam: ImageEncoder(cfg) for cam in self.cameras}  # params encoder_<cam>
        self.proprio = ProprioProjection(cfg.proprio_dim)
        self.ensemble = QEnsemble(cfg.ensemble_size, cfg.hidden)

    def encode(self, observation: Mapping[str, jax.Array], train: bool = False):
        """Observation features [B, F] (the part shared by all members and all actions)."""
        parts = []
        if self.config.input == "embedding":
            parts.append(observation["embedding"])
        else:
            parts += [self.encoder[cam](observation[f"image_{cam}"], train) for cam in self.cameras]
        parts.append(self.proprio(observation["state"]))
        return jnp.concatenate(parts, axis=-1)

    def __call__(self, observation: Mapping[str, jax.Array], actions, train: bool = False):
        """Q values [K, *actions.shape[:-1]]; actions [B, A] or [B, n, A]."""
        features = self.encode(observation, train)
        return self.ensemble(features, actions.astype(features.dtype))


# ---------------------------------------------------------------- augmentation


def random_crop(images, rng, pad: int):
    """Pads [..., H, W, C] images by `pad` pixels (edge mode) and crops back at a random offset.

    Every image (each index of the leading axes) gets its own offset in [0, 2 pad]^2. Pure and
    jit-able; `pad` = 0 returns the input.
    """
    if pad == 0:
        return images
    h, w, c = images.shape[-3:]
    flat = images.reshape((-1, h, w, c))
    padded = jnp.pad(flat, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
    offsets = jax.random.randint(rng, (flat.shape[0], 2), 0, 2 * pad + 1)
    crop = lambda img, off: jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, c))
    return jax.vmap(crop)(padded, offsets).reshape(images.shape)


def random_crop_observation(observation: Mapping[str, jax.Array], rng, pad: int) -> dict:
    """`random_crop` applied to every `image_*` entry (independent keys); other entries unchanged."""
    keys = sorted(k for k in observation if k.startswith("image_"))
    rngs = dict(zip(keys, jax.random.split(rng, max(len(keys), 1))))
    return {k: random_crop(v, rngs[k], pad) if k in rngs else v for k, v in observation.items()}


# ---------------------------------------------------------------- pretrained encoder weights


def _encoder_key(params, camera: str) -> str:
    key = f"encoder_{camera}"
    if key not in params:
        known = sorted(k[len("encoder_"):] for k in params if k.startswith("encoder_"))
        raise KeyError(f"critic params have no encoder for camera {camera!r}; cameras: {known}")
    return key


def load_encoder_params(params, path: str | os.PathLike, camera: str) -> dict:
    """Critic params with camera's ResNet trunk (`encoder_<camera>/resnet`) loaded from `path`.

    `path`: `.npz` with '/'-joined parameter paths (e.g. `stage1/conv1/kernel`) or a flax msgpack
    file of the nested dict (as written by `save_encoder_params`); a single top-level `params` key
    is unwrapped. Names and shapes must match `ResNet10Encoder(encoder_widths)` exactly; a
    mismatch raises ValueError naming the parameter. Returns a new dict; `params` is unchanged.
    """
    params = flax.core.unfreeze(params)
    key = _encoder_key(params, camera)
    tree = load_tree(path)
    if set(tree) == {"params"}:
        tree = tree["params"]
    trunk = check_tree(tree, params[key]["resnet"], f"encoder checkpoint {os.fspath(path)}")
    return {**params, key: {**params[key], "resnet": trunk}}


def save_encoder_params(params, path: str | os.PathLike, camera: str) -> None:
    """Writes camera's ResNet trunk in the format `load_encoder_params` reads (.npz or msgpack)."""
    save_tree(params[_encoder_key(params, camera)]["resnet"], path)

"""Octo's transformer (octo-models/octo, 1.0 and 1.5) as a backbone, for imported Octo weights.

Reproduces `OctoTransformer` up to the action readout embedding, the part ConRFT uses:

* images: per Octo camera (`config.octo_cameras`), the frame stacked on the channel axis with an
  all-zero goal image (Octo's language-only task; `octo_goal_images`), scaled to [-1, 1], then SmallStem16: four 3x3/2
  weight-standardised convolutions, each with GroupNorm(32) and ReLU, a 1x1 convolution to
  `octo_stem_out` channels, flattened row-major to tokens; a Dense to the token width plus a
  position embedding per (frame, token). Frames of another size are resized (bilinear) first.
* task: Octo's language tokens are T5-base encoder states [B, L, E] (L = 16, E = 768). The T5
  encoder is not run here: pass them precomputed as `language_embedding` ([B, L, E] or flattened
  [B, L * E]). Without one the task tokens are masked out (what Octo does for a task without
  language), so the policy does not depend on the instruction. A Dense to the width plus a
  position embedding.
* proprio: the released models have no proprio token; `state` is not read (the consistency head
  takes the state, as in ConRFT).
* readouts: zeros plus a position embedding per (frame, readout).
* sequence [task] + per frame [obs_<cam> for each camera, obs_task_language (1.5: the task tokens
  repeated), readout_action], and Octo's block-causal mask from its token groups: task -> task;
  obs -> task and obs of frames <= t; readout -> task, obs and readouts of frames <= t. Key padding:
  a padded frame's observation tokens, and the task tokens when there is no instruction. With
  `octo_correct_attention=False` the group lookup has Octo 1.0's off-by-one (the first token of a
  group counts as the group before).
* pre-LayerNorm blocks (`backbone.TransformerBlock`), final LayerNorm, mean over the readouts.

The parameter tree keeps Octo's names where it can (`obs_primary_projection`, ...); the blocks and
stems are renamed by `agents/octo_import.py`.
"""

from __future__ import annotations

import fnmatch
from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vlarft.agents.config import BackboneConfig
from vlarft.agents.networks.backbone import TransformerBlock, attention_bias

READOUT = "readout_action"
TASK = "task_language"
STEM_STRIDE = 16  # SmallStem16: four stride-2 convolutions


class StandardizedConv(nn.Module):
    """3x3 stride-2 convolution (padding 1) whose kernel is standardised over its (h, w, in) axes on
    every call: (w - mean) / (std + 1e-5). Parameters `kernel` [3, 3, in, out] and `bias` [out]."""

    features: int

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (3, 3, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        kernel = kernel - kernel.mean(axis=(0, 1, 2))
        kernel = kernel / (kernel.std(axis=(0, 1, 2)) + 1e-5)
        y = jax.lax.conv_general_dilated(x, kernel, (2, 2), ((1, 1), (1, 1)),
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y + bias


class SmallStem16(nn.Module):
    """uint8 [N, H, W, C] (frame + goal channels) -> [N, (H / 16) * (W / 16), out] tokens."""

    features: tuple[int, ...]
    out: int

    @nn.compact
    def __call__(self, images):
        x = images.astype(jnp.float32) / 127.5 - 1.0
        for i, features in enumerate(self.features):
            x = StandardizedConv(features, name=f"StdConv_{i}")(x)
            x = nn.relu(nn.GroupNorm(num_groups=32, epsilon=1e-6, name=f"GroupNorm_{i}")(x))
        x = nn.Conv(self.out, (1, 1), padding="VALID", name="embedding")(x)
        return x.reshape(x.shape[0], -1, self.out)


def octo_token_groups(cameras, tokens_per_camera, num_task: int, num_readouts: int,
                      repeat_task: bool) -> tuple[list, list]:
    """Octo's token groups: ([(name, tokens)] of the prefix, [(name, tokens)] of every frame)."""
    frame = [(f"obs_{cam}", n) for cam, n in zip(cameras, tokens_per_camera)]
    if repeat_task:
        frame.append((f"obs_{TASK}", num_task))
    frame.append((READOUT, num_readouts))
    return [(TASK, num_task)], frame


def _rules(name: str) -> tuple[str, ...]:
    """The group name patterns a group attends to (all causally: frames <= its own)."""
    if name.startswith("task_"):
        return ("task_*",)
    if name.startswith("obs_"):
        return ("task_*", "obs_*")
    return ("task_*", "obs_*", name)


def octo_rule_mask(prefix, frame, window: int, correct: bool = True) -> np.ndarray:
    """bool [N, N], True where token (row) may attend to token (column), from Octo's group rules.

    A token's group is found by `searchsorted` over the cumulative group sizes, side "right" (1.5)
    or "left" (`correct=False`, Octo 1.0: a group's first token is labelled as the group before).
    """
    def labels(groups):
        ends = np.cumsum([n for _, n in groups])
        index = np.searchsorted(ends, np.arange(ends[-1]), side="right" if correct else "left")
        return [groups[i][0] for i in index]

    names = labels(prefix) + labels(frame) * window
    num_prefix, per_frame = sum(n for _, n in prefix), sum(n for _, n in frame)
    steps = np.concatenate([np.full(num_prefix, -1), np.repeat(np.arange(window), per_frame)])
    distinct = sorted(set(names))
    allowed = np.array([[any(fnmatch.fnmatch(other, p) for p in _rules(me)) for other in distinct] for me in distinct])
    group = np.array([distinct.index(n) for n in names])
    return allowed[group[:, None], group[None, :]] & (steps[None, :] <= steps[:, None])


class OctoBackbone(nn.Module):
    """Octo's transformer; see the module docstring. Same call as `VLABackbone`: returns the mean
    action readout of the last frame, float32 [B, width] ([B, W, width] if `all_frames`)."""

    config: BackboneConfig
    cameras: tuple[str, ...]
    state_dim: int

    def setup(self):
        cfg = self.config
        if len(self.cameras) != len(cfg.octo_cameras):
            raise ValueError(f"the data has cameras {list(self.cameras)}, the Octo backbone's tokenizers are "
                             f"{list(cfg.octo_cameras)}: one camera per tokenizer, in sorted order")
        if len(cfg.octo_image_sizes) != len(cfg.octo_cameras):
            raise ValueError(f"octo_image_sizes {cfg.octo_image_sizes} needs one size per camera {cfg.octo_cameras}")
        if cfg.window > cfg.octo_max_horizon:
            raise ValueError(f"window {cfg.window} > octo_max_horizon {cfg.octo_max_horizon}")
        width, horizon = cfg.width, cfg.octo_max_horizon
        pos = nn.initializers.normal(0.02)
        self.stems = {cam: SmallStem16(cfg.octo_stem_features, cfg.octo_stem_out, name=f"image_{cam}")
                      for cam in cfg.octo_cameras}
        self.projections = {cam: nn.Dense(width, name=f"obs_{cam}_projection") for cam in cfg.octo_cameras}
        self.positions = {cam: self.param(f"obs_{cam}_pos_embedding", pos, (1, horizon, (size // STEM_STRIDE) ** 2, width))
                          for cam, size in zip(cfg.octo_cameras, cfg.octo_image_sizes)}
        self.task_projection = nn.Dense(width, name=f"{TASK}_projection")
        self.task_position = self.param(f"{TASK}_pos_embedding", pos, (1, cfg.octo_task_tokens, width))
        self.readout_position = self.param(f"{READOUT}_pos_embedding", pos, (1, horizon, cfg.num_readouts, width))
        self.blocks = [TransformerBlock(width, cfg.heads, cfg.mlp_ratio, cfg.dropout, name=f"block{i}")
                       for i in range(cfg.depth)]
        self.final_norm = nn.LayerNorm(name="final_norm")

    def __call__(self, images: Mapping[str, jax.Array], state, text_ids=None, text_mask=None,
                 timestep_mask=None, *, language_embedding=None, train: bool = False, all_frames: bool = False):
        cfg = self.config
        batch, window = state.shape[:2]
        if window != cfg.window:
            raise ValueError(f"state has {window} frames, config.window is {cfg.window}")
        if timestep_mask is None:
            timestep_mask = jnp.ones((batch, window), bool)
        timestep_mask = jnp.asarray(timestep_mask, bool)
        task, task_valid = self._task_tokens(language_embedding, batch)

        groups, masks = [], []
        for ours, cam, size in zip(self.cameras, cfg.octo_cameras, cfg.octo_image_sizes):
            if ours not in images:
                raise KeyError(f"images lack camera {ours!r} (Octo tokenizer {cam!r}); got {sorted(images)}")
            tokens = self._image_tokens(cam, images[ours], size)
            groups.append(tokens + self.positions[cam][:, :window])
            masks.append(jnp.broadcast_to(timestep_mask[:, :, None], tokens.shape[:3]))
        if cfg.octo_repeat_task_tokens:
            groups.append(jnp.broadcast_to(task[:, None], (batch, window) + task.shape[1:]))
            masks.append(jnp.broadcast_to(task_valid[:, None, None], (batch, window, task.shape[1])))
        readouts = jnp.broadcast_to(self.readout_position[:, :window], (batch, window, cfg.num_readouts, cfg.width))
        groups.append(readouts)
        masks.append(jnp.ones(readouts.shape[:3], bool))

        per_frame = [g.shape[2] for g in groups]
        x = jnp.concatenate([task, jnp.concatenate(groups, axis=2).reshape(batch, -1, cfg.width)], axis=1)
        key_valid = jnp.concatenate([jnp.broadcast_to(task_valid[:, None], (batch, task.shape[1])),
                                     jnp.concatenate(masks, axis=2).reshape(batch, -1)], axis=1)
        prefix, frame = octo_token_groups(cfg.octo_cameras, per_frame[:len(cfg.octo_cameras)], task.shape[1],
                                          cfg.num_readouts, cfg.octo_repeat_task_tokens)
        rules = octo_rule_mask(prefix, frame, window, cfg.octo_correct_attention)
        bias = attention_bias((jnp.asarray(rules)[None] & key_valid[:, None, :])[:, None])  # [B, 1, N, N]

        num_prefix, frame_size = task.shape[1], sum(per_frame)
        readout_index = (num_prefix + np.arange(window)[:, None] * frame_size + frame_size - cfg.num_readouts
                         + np.arange(cfg.num_readouts)[None, :])
        wanted = readout_index.reshape(-1) if all_frames else readout_index[-1]
        for i, block in enumerate(self.blocks):
            if i == len(self.blocks) - 1:  # only the readouts are read out
                x, _ = block(x, bias[:, :, wanted], train, wanted)
            else:
                x, _ = block(x, bias, train)
        if not self.blocks:
            x = x[:, wanted]
        x = self.final_norm(x).reshape(batch, -1, cfg.num_readouts, cfg.width).mean(axis=2)
        return x if all_frames else x[:, -1]

    def _image_tokens(self, cam: str, frames, size: int):
        """uint8 [B, W, H, Wd, 3] -> [B, W, P, width]: stem on (frame, zero goal), projection."""
        batch, window = frames.shape[:2]
        x = frames.reshape((-1,) + frames.shape[2:])
        if x.shape[1:3] != (size, size):
            x = jnp.round(jax.image.resize(x.astype(jnp.float32), (x.shape[0], size, size, x.shape[3]), "bilinear"))
            x = jnp.clip(x, 0, 255).astype(jnp.uint8)
        if self.config.octo_goal_images:  # Octo stacks the task's goal image; a language task has zeros
            x = jnp.concatenate([x, jnp.zeros_like(x)], axis=-1)
        tokens = self.projections[cam](self.stems[cam](x))
        return tokens.reshape(batch, window, tokens.shape[1], self.config.width)

    def _task_tokens(self, language_embedding, batch: int):
        """([B, L, width] task tokens, bool [B] instruction present)."""
        cfg = self.config
        L, E = cfg.octo_task_tokens, cfg.language_embedding_dim
        if E <= 0:
            raise ValueError("an Octo backbone needs language_embedding_dim (T5 width, 768 for t5-base)")
        if language_embedding is None:
            states, valid = jnp.zeros((batch, L, E), jnp.float32), jnp.zeros((batch,), bool)
        else:
            states = jnp.asarray(language_embedding, jnp.float32).reshape(batch, L, E)
            valid = jnp.ones((batch,), bool)
        states = jax.lax.stop_gradient(states)  # Octo keeps the language encoder frozen
        return self.task_projection(states) + self.task_position, valid

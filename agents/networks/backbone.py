"""Octo-style VLA backbone: (image windows, proprio, instruction) -> readout embedding [B, width].

Inputs of `VLABackbone.__call__`:
  images: {camera: uint8 [B, W, H, Wd, 3]} (camera names as in `cameras`, without `image_`);
  state: float32 [B, W, S]; timestep_mask: bool [B, W] (False = padding frame);
  text_ids int32 [B, L] + text_mask bool [B, L] from `vlarft.agents.networks.text.tokenize`, or
  language_embedding float32 [B, D] when `config.language_embedding_dim` > 0.

Building the W-frame window of step t: frames t-W+1 .. t of its episode; frames before the
episode start are padding, a copy of the first frame with timestep_mask False (never attended
to). `vlarft.agents.observation` implements this (`window_indices`, `episode_windows` for whole
episodes, `FrameHistory` while acting).

Token sequence: [task tokens] then, per frame t, [image patches of every camera, proprio token]
(the observation tokens) followed by `num_readouts` readout tokens. Attention (Octo's rules):
task -> task; observation tokens of frame t -> task + observation tokens of frames <= t;
readouts of frame t -> task + observation tokens of frames <= t + readouts of frame t. Nothing
else attends to readouts; padded text tokens and padding frames are never attended to. The
output is the mean of the last frame's readouts after the final LayerNorm.
"""

from __future__ import annotations

import os
from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vlarft.agents.config import BackboneConfig
from vlarft.agents.networks.common import check_tree, dense, load_tree, save_tree

TASK, OBS, READOUT = 0, 1, 2
embed_init = nn.initializers.normal(0.02)


def token_layout(num_task: int, num_obs: int, num_readouts: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    """(kind [N], frame [N]) of the token sequence; kind TASK/OBS/READOUT, frame -1 for task tokens."""
    per_frame = [OBS] * num_obs + [READOUT] * num_readouts
    kind = np.array([TASK] * num_task + per_frame * window, np.int32)
    frame = np.concatenate([np.full(num_task, -1), np.repeat(np.arange(window), len(per_frame))]).astype(np.int32)
    return kind, frame


def attention_mask(kind: np.ndarray, frame: np.ndarray, task_mask, timestep_mask):
    """bool [B, N, N], True where query (row) may attend to key (column).

    `task_mask` [B, num_task] and `timestep_mask` [B, W] remove padded keys; every token may
    attend to itself, so no row is empty.
    """
    qk, kk = kind[:, None], kind[None, :]
    qf, kf = frame[:, None], frame[None, :]
    rules = ((kk == TASK)
             | ((kk == OBS) & (qk != TASK) & (kf <= qf))
             | ((kk == READOUT) & (qk == READOUT) & (kf == qf)))
    per_frame = int(np.sum(frame == 0))
    key_valid = jnp.concatenate([task_mask.astype(bool),
                                 jnp.repeat(timestep_mask.astype(bool), per_frame, axis=1)], axis=1)
    return (jnp.asarray(rules)[None] & key_valid[:, None, :]) | jnp.eye(len(kind), dtype=bool)[None]


class ImageTokenizer(nn.Module):
    """uint8 [..., H, Wd, 3] -> [..., P, width]: a 3x3/2 conv stem (when `stem_features` > 0),
    then non-overlapping patches.

    Patches cover `patch_size` input pixels (patch_size/2 on the stem's map); P = (H // p) * (Wd // p).
    Adds learned position embeddings (one per patch). Without a stem this is a plain ViT patchify,
    several times cheaper on a CPU.
    """

    width: int
    patch_size: int
    stem_features: int = 32

    @nn.compact
    def __call__(self, images):
        lead = images.shape[:-3]
        x = images.reshape((-1,) + images.shape[-3:]).astype(jnp.float32) / 127.5 - 1.0
        patch = self.patch_size
        if self.stem_features:
            if self.patch_size % 2:
                raise ValueError(f"patch_size must be even (stem stride 2), got {self.patch_size}")
            x = nn.Conv(self.stem_features, (3, 3), (2, 2), padding="SAME", name="stem")(x)
            x = nn.relu(nn.GroupNorm(min(8, self.stem_features), name="stem_norm")(x))
            patch //= 2
        x = nn.Conv(self.width, (patch, patch), (patch, patch), padding="VALID", name="patches")(x)
        tokens = x.reshape((x.shape[0], -1, self.width))
        tokens = tokens + self.param("pos", embed_init, tokens.shape[1:])
        return tokens.reshape(lead + tokens.shape[1:])


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block: x + MHA(LN(x)), then x + MLP(LN(x)) with GELU; dropout on both."""

    width: int
    heads: int
    mlp_ratio: int
    dropout: float

    @nn.compact
    def __call__(self, x, mask, train: bool = False):
        drop = lambda y: nn.Dropout(self.dropout)(y, deterministic=not train)
        y = nn.MultiHeadDotProductAttention(num_heads=self.heads, qkv_features=self.width,
                                            dropout_rate=self.dropout, deterministic=not train,
                                            kernel_init=nn.initializers.xavier_uniform(),
                                            name="attention")(nn.LayerNorm(name="norm1")(x), mask=mask)
        x = x + drop(y)
        y = nn.gelu(dense(self.mlp_ratio * self.width, name="mlp1")(nn.LayerNorm(name="norm2")(x)))
        return x + drop(dense(self.width, name="mlp2")(drop(y)))


class VLABackbone(nn.Module):
    """Octo-style transformer; see the module docstring. Returns float32 [B, width]."""

    config: BackboneConfig
    cameras: tuple[str, ...]
    state_dim: int

    @nn.compact
    def __call__(self, images: Mapping[str, jax.Array], state, text_ids=None, text_mask=None,
                 timestep_mask=None, *, language_embedding=None, train: bool = False,
                 all_frames: bool = False):
        """Readout embedding [B, width] of the last frame ([B, W, width] for every frame if `all_frames`).

        The final token sequence [B, N, width] is sown as `intermediates/tokens`.
        """
        cfg = self.config
        batch, window = state.shape[:2]
        if window != cfg.window:
            raise ValueError(f"state has {window} frames, config.window is {cfg.window}")
        if state.shape[-1] != self.state_dim:
            raise ValueError(f"state has {state.shape[-1]} dimensions, expected {self.state_dim}")
        missing = [cam for cam in self.cameras if cam not in images]
        if missing:
            raise KeyError(f"images lack cameras {missing}; expected {list(self.cameras)}")
        if timestep_mask is None:
            timestep_mask = jnp.ones((batch, window), bool)

        task, task_mask = self._task_tokens(text_ids, text_mask, language_embedding, batch)
        obs = [ImageTokenizer(cfg.width, cfg.patch_size, cfg.stem_features, name=f"image_{cam}")(images[cam]) for cam in self.cameras]
        obs.append(dense(cfg.width, name="proprio")(state.astype(jnp.float32))[:, :, None])
        obs = jnp.concatenate(obs, axis=2)  # [B, W, P, width]
        readouts = jnp.broadcast_to(self.param("readouts", embed_init, (cfg.num_readouts, cfg.width)),
                                    (batch, window, cfg.num_readouts, cfg.width))
        frames = jnp.concatenate([obs, readouts], axis=2)
        frames = frames + self.param("frame_pos", embed_init, (cfg.window, cfg.width))[None, :, None]
        x = jnp.concatenate([task, frames.reshape(batch, -1, cfg.width)], axis=1)

        kind, frame = token_layout(task.shape[1], obs.shape[2], cfg.num_readouts, window)
        mask = attention_mask(kind, frame, task_mask, timestep_mask)[:, None]  # [B, 1, N, N]
        for i in range(cfg.depth):
            x = TransformerBlock(cfg.width, cfg.heads, cfg.mlp_ratio, cfg.dropout, name=f"block{i}")(x, mask, train)
        x = nn.LayerNorm(name="final_norm")(x)
        self.sow("intermediates", "tokens", x)

        readouts = x[:, np.flatnonzero(kind == READOUT)].reshape(batch, window, cfg.num_readouts, cfg.width)
        frame_embeddings = readouts.mean(axis=2)
        return frame_embeddings if all_frames else frame_embeddings[:, -1]

    def _task_tokens(self, text_ids, text_mask, language_embedding, batch):
        """Task tokens [B, L, width] and their mask [B, L]."""
        cfg = self.config
        if cfg.language_embedding_dim > 0:
            if language_embedding is None:
                raise ValueError("config.language_embedding_dim > 0: pass language_embedding [B, D]")
            tokens = dense(cfg.width, name="language")(language_embedding.astype(jnp.float32))[:, None]
            return tokens, jnp.ones((batch, 1), bool)
        if text_ids is None:
            raise ValueError("pass text_ids [B, L] (and text_mask) from networks.text.tokenize")
        if text_ids.shape[1] > cfg.max_text_tokens:
            raise ValueError(f"{text_ids.shape[1]} text tokens > max_text_tokens {cfg.max_text_tokens}")
        if text_mask is None:
            text_mask = text_ids != 0
        tokens = nn.Embed(cfg.vocab_size, cfg.width, embedding_init=embed_init, name="text")(text_ids)
        pos = self.param("text_pos", embed_init, (cfg.max_text_tokens, cfg.width))
        return tokens + pos[None, :text_ids.shape[1]], text_mask


def save_backbone_params(params, path: str | os.PathLike) -> None:
    """Writes backbone params (the `params` collection) to a flax msgpack file (atomic)."""
    save_tree(params, path)


def load_backbone_params(path: str | os.PathLike, target=None) -> dict:
    """Backbone params from a `save_backbone_params` file.

    With `target` (params or `jax.eval_shape` output of the model they are for), the file must
    hold exactly its parameter paths and shapes: else ValueError naming the parameter path.
    """
    tree = load_tree(path)
    if target is None:
        return jax.tree_util.tree_map(jnp.asarray, tree)
    return check_tree(tree, target, f"backbone checkpoint {os.fspath(path)}")

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


MASKED = -1e30  # additive attention bias of a masked key: exp() underflows to exactly 0


def attention_bias(mask):
    """The additive form of a bool attention mask: 0 where attended, MASKED elsewhere (float32).

    Built once per forward pass and shared by every block (cheaper than a select per block and
    its gradient); softmax gives masked keys exactly zero weight, as masking with a select does.
    """
    return jnp.where(mask, 0.0, MASKED).astype(jnp.float32)


class PatchEmbedding(nn.Module):
    """Non-overlapping p x p patches -> `features`: [N, H, Wd, C] -> [N, H // p, Wd // p, features].

    The function and the parameters (`kernel` [p, p, C, features], `bias` [features], same
    initialisers) of `nn.Conv(features, (p, p), strides=(p, p), padding="VALID")`, computed as one
    contraction of each patch's pixels with the kernel: several times cheaper than XLA's strided
    convolution and its kernel gradient on a CPU, and checkpoint-compatible with it.
    """

    features: int
    patch: int

    @nn.compact
    def __call__(self, x):
        n, h, w, c = x.shape
        p = self.patch
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (p, p, c, self.features))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        rows, cols = h // p, w // p
        patches = x[:, :rows * p, :cols * p].reshape(n, rows, p, cols, p, c)
        return jnp.einsum("nihjwc,hwco->nijo", patches, kernel) + bias


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
        x = PatchEmbedding(self.width, patch, name="patches")(x)
        tokens = x.reshape((x.shape[0], -1, self.width))
        tokens = tokens + self.param("pos", embed_init, tokens.shape[1:])
        return tokens.reshape(lead + tokens.shape[1:])


class Projection(nn.Module):
    """The parameters of a `nn.DenseGeneral` projection, returned flattened to [in, out] / [out].

    kernel [*kernel_shape] (its first `inputs` axes are the input axes) and bias [*bias_shape],
    initialised exactly as DenseGeneral does (Xavier-uniform on the flattened kernel, zero bias),
    so parameter files of `nn.MultiHeadDotProductAttention` load unchanged.
    """

    kernel_shape: tuple[int, ...]
    bias_shape: tuple[int, ...]
    inputs: int = 1

    @nn.compact
    def __call__(self):
        fan_in = int(np.prod(self.kernel_shape[:self.inputs]))
        fan_out = int(np.prod(self.kernel_shape[self.inputs:]))

        def kernel_init(rng, shape, dtype=jnp.float32):
            return nn.initializers.xavier_uniform()(rng, (fan_in, fan_out), dtype).reshape(shape)

        kernel = self.param("kernel", kernel_init, self.kernel_shape)
        bias = self.param("bias", nn.initializers.zeros_init(), self.bias_shape)
        return kernel.reshape(fan_in, fan_out), bias.reshape(-1)


class SelfAttention(nn.Module):
    """Multi-head self-attention with an additive mask bias: the function and parameter tree
    (`query`, `key`, `value`: kernel [width, heads, head_dim]; `out`: kernel [heads, head_dim,
    width]) of `nn.MultiHeadDotProductAttention(heads, qkv_features=width)`, with the three input
    projections fused into one matmul and heads laid out batch-major, so neither pass transposes
    inside the attention products.

    `x` [B, N, width] are the tokens whose keys and values are attended to; `queries` (static
    indices into N, None = all) the tokens whose outputs are needed; `bias` [B, 1, Nq, N].
    """

    width: int
    heads: int
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x, bias, queries=None, train: bool = False):
        batch, tokens, width = x.shape
        heads, head_dim = self.heads, width // self.heads
        qkv = [Projection((width, heads, head_dim), (heads, head_dim), name=name)() for name in ("query", "key", "value")]
        kernel = jnp.concatenate([k for k, _ in qkv], axis=1)
        bias_qkv = jnp.concatenate([b for _, b in qkv])
        if queries is None:
            y = (x.reshape(-1, width) @ kernel + bias_qkv).reshape(batch, tokens, 3, heads, head_dim)
            q, k, v = jnp.moveaxis(y, 2, 0).transpose(0, 1, 3, 2, 4)  # each [B, H, N, D]
        else:  # keys and values of every token, queries of a few
            y = (x.reshape(-1, width) @ kernel[:, width:] + bias_qkv[width:]).reshape(batch, tokens, 2, heads, head_dim)
            k, v = jnp.moveaxis(y, 2, 0).transpose(0, 1, 3, 2, 4)
            q = (x[:, queries] @ kernel[:, :width] + bias_qkv[:width]).reshape(batch, -1, heads, head_dim)
            q = q.transpose(0, 2, 1, 3)
        q = q / jnp.sqrt(head_dim).astype(x.dtype)
        weights = jax.nn.softmax(jnp.einsum("bhqd,bhkd->bhqk", q, k) + bias, axis=-1)
        if train and self.dropout > 0:  # as flax's attention: one mask shared over batch and heads
            keep = jax.random.bernoulli(self.make_rng("dropout"), 1.0 - self.dropout, (1, 1) + weights.shape[2:])
            weights = weights * keep / (1.0 - self.dropout)
        out = jnp.einsum("bhqk,bhkd->bqhd", weights, v).reshape(-1, width)
        out_kernel, out_bias = Projection((heads, head_dim, width), (width,), inputs=2, name="out")()
        return (out @ out_kernel + out_bias).reshape(batch, -1, width)


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block: x + MHA(LN(x)), then x + MLP(LN(x)) with GELU; dropout on both.

    `bias` is the additive attention mask (`attention_bias`) [B, 1, Nq, N]. With `queries`
    (static token indices) only those tokens' outputs are computed ([B, Nq, width]); every token
    is still attended to.
    """

    width: int
    heads: int
    mlp_ratio: int
    dropout: float

    @nn.compact
    def __call__(self, x, bias, train: bool = False, queries=None):
        drop = lambda y: nn.Dropout(self.dropout)(y, deterministic=not train)
        y = SelfAttention(self.width, self.heads, self.dropout, name="attention")(
            nn.LayerNorm(name="norm1")(x), bias, queries, train)
        x = (x if queries is None else x[:, queries]) + drop(y)
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
        bias = attention_bias(attention_mask(kind, frame, task_mask, timestep_mask)[:, None])  # [B, 1, N, N]
        # Only readouts are read out: the last block computes just those (all tokens when the
        # final token sequence is asked for).
        wanted = np.flatnonzero((kind == READOUT) & (all_frames | (frame == window - 1)))
        queries = None if self.is_mutable_collection("intermediates") else wanted
        for i in range(cfg.depth):
            block = TransformerBlock(cfg.width, cfg.heads, cfg.mlp_ratio, cfg.dropout, name=f"block{i}")
            if i == cfg.depth - 1 and queries is not None:
                x = block(x, bias[:, :, queries], train, queries)
            else:
                x = block(x, bias, train)
        x = nn.LayerNorm(name="final_norm")(x)
        if queries is None or cfg.depth == 0:
            self.sow("intermediates", "tokens", x)
            x = x[:, wanted]
        readouts = x.reshape(batch, -1, cfg.num_readouts, cfg.width)
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

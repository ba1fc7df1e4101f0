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
    width]) of `nn.MultiHeadDotProductAttention(heads, qkv_features=width)`, with heads laid out
    batch-major, so neither pass transposes inside the attention products, and queries computed
    only for the tokens whose outputs are needed.

    `x` [B, N, width] are the tokens whose keys and values are attended to; `queries` (static
    indices into N, None = all) the tokens whose outputs are needed; `context` (keys, values)
    [B, heads, M, head_dim] of earlier tokens attended to as well (a cache, see
    `VLABackbone.stream_step`); `bias` [B, 1, Nq, M + N]. Returns (output [B, Nq, width],
    (keys, values) of `x`).
    """

    width: int
    heads: int
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x, bias, queries=None, train: bool = False, context=None):
        batch, _, width = x.shape
        heads, head_dim = self.heads, width // self.heads

        def project(name, tokens):  # [B, T, width] -> [B, heads, T, head_dim]
            kernel, offset = Projection((width, heads, head_dim), (heads, head_dim), name=name)()
            return (tokens.reshape(-1, width) @ kernel + offset).reshape(batch, -1, heads, head_dim).transpose(0, 2, 1, 3)

        q = project("query", x if queries is None else x[:, queries])
        k, v = project("key", x), project("value", x)
        own = (k, v)
        if context is not None:
            k, v = (jnp.concatenate([c, o], axis=2) for c, o in zip(context, own))
        q = q / jnp.sqrt(head_dim).astype(x.dtype)
        weights = jax.nn.softmax(jnp.einsum("bhqd,bhkd->bhqk", q, k) + bias, axis=-1)
        if train and self.dropout > 0:  # as flax's attention: one mask shared over batch and heads
            keep = jax.random.bernoulli(self.make_rng("dropout"), 1.0 - self.dropout, (1, 1) + weights.shape[2:])
            weights = weights * keep / (1.0 - self.dropout)
        out = jnp.einsum("bhqk,bhkd->bqhd", weights, v).reshape(-1, width)
        out_kernel, out_bias = Projection((heads, head_dim, width), (width,), inputs=2, name="out")()
        return (out @ out_kernel + out_bias).reshape(batch, -1, width), own


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block: x + MHA(LN(x)), then x + MLP(LN(x)) with GELU; dropout on both.

    `bias` is the additive attention mask (`attention_bias`) [B, 1, Nq, M + N]. With `queries`
    (static token indices) only those tokens' outputs are computed ([B, Nq, width]); every token
    is still attended to, and so are the `context` keys/values (M earlier tokens). Returns
    (output, (keys, values) of `x`), the keys/values being what a cache keeps.
    """

    width: int
    heads: int
    mlp_ratio: int
    dropout: float

    @nn.compact
    def __call__(self, x, bias, train: bool = False, queries=None, context=None):
        drop = lambda y: nn.Dropout(self.dropout)(y, deterministic=not train)
        y, kv = SelfAttention(self.width, self.heads, self.dropout, name="attention")(
            nn.LayerNorm(name="norm1")(x), bias, queries, train, context)
        x = (x if queries is None else x[:, queries]) + drop(y)
        rows = x.reshape(-1, x.shape[-1])  # one row axis: no transposed copy for the weight gradients
        y = nn.gelu(dense(self.mlp_ratio * self.width, name="mlp1")(nn.LayerNorm(name="norm2")(rows)))
        return x + drop(dense(self.width, name="mlp2")(drop(y))).reshape(x.shape), kv


class VLABackbone(nn.Module):
    """Octo-style transformer; see the module docstring. Returns float32 [B, width].

    Besides the whole window (`__call__`), it runs step by step while acting (window <= 2):
    `stream_task` once per instruction, `stream_step` for each new frame (its tokens only,
    attending to cached keys/values of the task and of the previous frame) and, after the
    action, `stream_frame` to cache the new frame as the next step's previous one. Same
    embedding as the whole window.
    """

    config: BackboneConfig
    cameras: tuple[str, ...]
    state_dim: int

    def setup(self):
        cfg = self.config
        if cfg.language_embedding_dim > 0:
            self.language = dense(cfg.width, name="language")
        else:
            self.text = nn.Embed(cfg.vocab_size, cfg.width, embedding_init=embed_init, name="text")
            self.text_pos = self.param("text_pos", embed_init, (cfg.max_text_tokens, cfg.width))
        self.tokenizers = {cam: ImageTokenizer(cfg.width, cfg.patch_size, cfg.stem_features, name=f"image_{cam}")
                           for cam in self.cameras}
        self.proprio = dense(cfg.width, name="proprio")
        self.readouts = self.param("readouts", embed_init, (cfg.num_readouts, cfg.width))
        self.frame_pos = self.param("frame_pos", embed_init, (cfg.window, cfg.width))
        self.blocks = [TransformerBlock(cfg.width, cfg.heads, cfg.mlp_ratio, cfg.dropout, name=f"block{i}")
                       for i in range(cfg.depth)]
        self.final_norm = nn.LayerNorm(name="final_norm")

    def __call__(self, images: Mapping[str, jax.Array], state, text_ids=None, text_mask=None,
                 timestep_mask=None, *, language_embedding=None, train: bool = False,
                 all_frames: bool = False):
        """Readout embedding [B, width] of the last frame ([B, W, width] for every frame if `all_frames`).

        The final token sequence [B, N, width] is sown as `intermediates/tokens` (computed
        whole only when that collection is mutable).
        """
        cfg = self.config
        batch, window = state.shape[:2]
        if window != cfg.window:
            raise ValueError(f"state has {window} frames, config.window is {cfg.window}")
        self._check_frames(images, state)
        if timestep_mask is None:
            timestep_mask = jnp.ones((batch, window), bool)

        task, task_mask = self._task_tokens(text_ids, text_mask, language_embedding)
        frames, num_obs = self._frame_tokens(images, state, np.arange(window))
        x = jnp.concatenate([task, frames.reshape(batch, -1, cfg.width)], axis=1)

        kind, frame = token_layout(task.shape[1], num_obs, cfg.num_readouts, window)
        bias = attention_bias(attention_mask(kind, frame, task_mask, timestep_mask)[:, None])  # [B, 1, N, N]
        # Only readouts are read out: the last block computes just those (all tokens when the
        # final token sequence is asked for).
        wanted = np.flatnonzero((kind == READOUT) & (all_frames | (frame == window - 1)))
        queries = None if self.is_mutable_collection("intermediates") else wanted
        for i, block in enumerate(self.blocks):
            if i == cfg.depth - 1 and queries is not None:
                x, _ = block(x, bias[:, :, queries], train, queries)
            else:
                x, _ = block(x, bias, train)
        x = self.final_norm(x)
        if queries is None or cfg.depth == 0:
            self.sow("intermediates", "tokens", x)
            x = x[:, wanted]
        frame_embeddings = x.reshape(batch, -1, cfg.num_readouts, cfg.width).mean(axis=2)
        return frame_embeddings if all_frames else frame_embeddings[:, -1]

    # ------------------------------------------------------------ step by step (acting)

    def stream_task(self, text_ids=None, text_mask=None, *, language_embedding=None) -> dict:
        """The task tokens' keys/values at every block (they attend only to each other), computed
        once per instruction: the acting context of a window of one frame. A context is
        {"kv": [(keys, values) [B, heads, M, head_dim] per block], "valid": bool [B, M] (padded
        keys False), "frame": bool [B, M] (True for the previous frame's keys)}."""
        self._check_streamable()
        x, valid = self._task_tokens(text_ids, text_mask, language_embedding)
        bias = attention_bias((valid[:, None, :] | jnp.eye(x.shape[1], dtype=bool)[None])[:, None])
        kv = []
        for block in self.blocks:
            x, block_kv = block(x, bias)
            kv.append(block_kv)
        return {"kv": kv, "valid": valid, "frame": jnp.zeros_like(valid)}

    def stream_frame(self, task: dict, images: Mapping[str, jax.Array], state) -> dict:
        """The acting context of the next step (window 2): the task's keys/values (`stream_task`)
        followed by this frame's observation tokens' at every block, the frame being the first
        of the next window (attending to the task and to itself). images {camera: uint8
        [B, H, Wd, 3]}, state [B, S]. Computed after a step's action, off its latency."""
        self._check_streamable()
        images, state = {cam: x[:, None] for cam, x in images.items()}, state[:, None]
        self._check_frames(images, state)
        frames, num_obs = self._frame_tokens(images, state, np.arange(1))
        own = np.ones((num_obs, num_obs), bool)  # observation tokens of one frame attend to each other
        _, kv = self._stream_blocks(frames[:, 0, :num_obs], own, task, queries=None)
        frame = jnp.ones((state.shape[0], num_obs), bool)
        return {"kv": [tuple(jnp.concatenate([t, f], axis=2) for t, f in zip(task_kv, frame_kv))
                       for task_kv, frame_kv in zip(task["kv"], kv)],
                "valid": jnp.concatenate([task["valid"], frame], axis=1),
                "frame": jnp.concatenate([task["frame"], frame], axis=1)}

    def stream_step(self, context: dict, previous_valid, images: Mapping[str, jax.Array], state):
        """Readout embedding [B, width] of a new frame that ends the window: its tokens only,
        attending to the cached `context` (window 1: `stream_task`; window 2: `stream_frame` of
        the frame before, whose keys `previous_valid` bool [B] False masks out at an episode's
        first step, where the whole window's first frame is padding). Equals `__call__` on the
        window."""
        self._check_streamable()
        cfg = self.config
        images, state = {cam: x[:, None] for cam, x in images.items()}, state[:, None]
        self._check_frames(images, state)
        frames, num_obs = self._frame_tokens(images, state, np.array([cfg.window - 1]))
        kind = np.array([OBS] * num_obs + [READOUT] * cfg.num_readouts)
        own = (kind[None, :] == OBS) | (kind[:, None] == READOUT)  # obs -> obs; readouts -> obs + readouts
        valid = context["valid"] & (~context["frame"] | jnp.asarray(previous_valid, bool)[:, None])
        x, _ = self._stream_blocks(frames[:, 0], own, dict(context, valid=valid), queries=np.flatnonzero(kind == READOUT))
        return self.final_norm(x).mean(axis=1)

    def _stream_blocks(self, x, own_mask: np.ndarray, context: dict, queries):
        """The blocks over new tokens x [B, T, width] attending to a context's keys/values (where
        valid) and to each other by `own_mask` [T, T]; the last block computes only `queries`.
        Returns (output, [(keys, values) of the new tokens per block])."""
        valid = context["valid"][:, None, :]  # [B, 1, M]
        kv = []
        for i, block in enumerate(self.blocks):
            rows = queries if i == len(self.blocks) - 1 and queries is not None else np.arange(x.shape[1])
            mask = jnp.concatenate([jnp.broadcast_to(valid, (x.shape[0], len(rows), valid.shape[-1])),
                                    jnp.broadcast_to(jnp.asarray(own_mask[rows]), (x.shape[0], len(rows), x.shape[1]))],
                                   axis=2)
            x, block_kv = block(x, attention_bias(mask[:, None]), queries=None if len(rows) == x.shape[1] else rows,
                                context=context["kv"][i])
            kv.append(block_kv)
        return x, kv

    def _check_streamable(self) -> None:
        if self.config.window > 2:
            raise ValueError(f"step-by-step acting needs window <= 2 (a frame's keys then depend only on "
                             f"the task and itself), config.window is {self.config.window}")

    # ------------------------------------------------------------ tokens

    def _check_frames(self, images, state) -> None:
        if state.shape[-1] != self.state_dim:
            raise ValueError(f"state has {state.shape[-1]} dimensions, expected {self.state_dim}")
        missing = [cam for cam in self.cameras if cam not in images]
        if missing:
            raise KeyError(f"images lack cameras {missing}; expected {list(self.cameras)}")

    def _frame_tokens(self, images, state, positions: np.ndarray):
        """([B, F, P + R, width], P): every frame's P observation tokens (image patches of every
        camera, proprio) then its R readouts, plus the frame embedding of window `positions` [F]."""
        obs = [self.tokenizers[cam](images[cam]) for cam in self.cameras]
        obs.append(self.proprio(state.astype(jnp.float32))[:, :, None])
        obs = jnp.concatenate(obs, axis=2)  # [B, F, P, width]
        readouts = jnp.broadcast_to(self.readouts, obs.shape[:2] + self.readouts.shape)
        frames = jnp.concatenate([obs, readouts], axis=2) + self.frame_pos[positions][None, :, None]
        return frames, obs.shape[2]

    def _task_tokens(self, text_ids, text_mask, language_embedding):
        """Task tokens [B, L, width] and their mask [B, L]."""
        cfg = self.config
        if cfg.language_embedding_dim > 0:
            if language_embedding is None:
                raise ValueError("config.language_embedding_dim > 0: pass language_embedding [B, D]")
            tokens = self.language(language_embedding.astype(jnp.float32))[:, None]
            return tokens, jnp.ones((tokens.shape[0], 1), bool)
        if text_ids is None:
            raise ValueError("pass text_ids [B, L] (and text_mask) from networks.text.tokenize")
        if text_ids.shape[1] > cfg.max_text_tokens:
            raise ValueError(f"{text_ids.shape[1]} text tokens > max_text_tokens {cfg.max_text_tokens}")
        if text_mask is None:
            text_mask = text_ids != 0
        return self.text(text_ids) + self.text_pos[None, :text_ids.shape[1]], jnp.asarray(text_mask, bool)


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

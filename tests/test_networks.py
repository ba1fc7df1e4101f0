"""Networks: Karras schedule and consistency head, samplers, critic, tokenizer, VLA backbone."""

import dataclasses
import zlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import random_params

from vlarft.agents.config import get_config
from vlarft.agents.networks import (ConsistencyHead, Critic, VLABackbone, attention_mask, karras_sigmas,
                                    load_backbone_params, load_encoder_params, multistep_sigmas, random_crop,
                                    sample_actions, save_backbone_params, save_encoder_params, scalings,
                                    time_features, token_layout, tokenize)
from vlarft.agents.networks.backbone import PatchEmbedding, TransformerBlock, attention_bias
from vlarft.agents.networks.common import dense
from vlarft.agents.networks.critic import max_pool_same

TINY = get_config("tiny")
A, B, S, E = 7, 4, 19, 64
CAMERAS = ("front", "wrist")


def n_params(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


# ---------------------------------------------------------------- consistency head


def test_karras_schedule():
    sigmas = karras_sigmas(TINY.head)
    assert sigmas.shape == (40,)
    assert sigmas[0] == np.float32(80.0) and sigmas[-1] == np.float32(0.002)
    assert abs(sigmas[1] - 69.45) < 0.01
    assert abs(sigmas[38] - 0.00368) < 1e-5
    assert np.all(np.diff(sigmas) < 0)


def test_scalings_and_time_features():
    c_skip, c_out, c_in = scalings(jnp.float32(80.0), TINY.head)
    assert c_skip == pytest.approx(3.906e-5, rel=1e-3)
    assert c_out == pytest.approx(0.49998, abs=1e-5)
    assert c_in == pytest.approx(0.0125, rel=1e-4)
    c_skip, c_out, _ = scalings(jnp.float32(0.002), TINY.head)
    assert c_skip == 1.0 and c_out == 0.0
    np.testing.assert_allclose(time_features(jnp.array([1.0, 80.0])), [0.0, 250 * np.log(80.0)], rtol=1e-6)


@pytest.fixture(scope="module")
def head():
    module = ConsistencyHead(TINY.head, A)
    params = random_params(module, jnp.zeros((B, A)), 1.0, jnp.zeros((B, E)), jnp.zeros((B, S)), seed=3)
    obs = jax.random.normal(jax.random.PRNGKey(4), (B, E)), jax.random.normal(jax.random.PRNGKey(5), (B, S))
    return module, params, obs


def test_boundary_condition_and_box(head):
    module, params, (emb, state) = head
    x = jax.random.uniform(jax.random.PRNGKey(0), (B, A), minval=-0.99, maxval=0.99)
    clipping = ConsistencyHead(dataclasses.replace(TINY.head, action_bound="clip"), A)
    unclipped = ConsistencyHead(dataclasses.replace(TINY.head, action_bound="straight_through"), A)
    sigmas = jnp.broadcast_to(jnp.asarray(karras_sigmas(TINY.head)), (B, 40))

    @jax.jit
    def run(params, x, big):
        apply = lambda m, x, sigma: m.apply({"params": params}, x, sigma, emb, state)
        return apply(clipping, x, 0.002), apply(unclipped, 3 * x, 0.002), apply(clipping, big, sigmas)

    at_min, unclipped_at_min, out = run(params, x, 80 * jax.random.normal(jax.random.PRNGKey(1), (B, 40, A)))
    np.testing.assert_array_equal(at_min, x)
    np.testing.assert_array_equal(unclipped_at_min, 3 * x)
    assert out.shape == (B, 40, A) and float(jnp.max(jnp.abs(out))) <= 1.0
    assert float(jnp.std(out)) > 0.1


def test_straight_through_bound_keeps_the_gradient_of_a_saturated_dimension(head):
    _, params, (emb, state) = head
    configs = {bound: dataclasses.replace(TINY.head, action_bound=bound) for bound in ("clip", "straight_through")}

    def grad_norm_of_first_dim(cfg):
        module = ConsistencyHead(cfg, A)

        def first_dim(p):  # large output scale: the one-step samples of dim 0 leave the box
            scaled = jax.tree_util.tree_map(lambda x: 50.0 * x, p)
            a = sample_actions(module.apply, scaled, emb, state, jax.random.PRNGKey(0), cfg, A)
            return jnp.sum(a[:, 0]), a

        (_, actions), grads = jax.value_and_grad(first_dim, has_aux=True)(params)
        return actions, float(optax.global_norm(grads))

    clipped_actions, clipped_grad = grad_norm_of_first_dim(configs["clip"])
    st_actions, st_grad = grad_norm_of_first_dim(configs["straight_through"])
    assert float(jnp.mean(jnp.abs(clipped_actions[:, 0]) >= 0.999)) == 1.0  # every sample saturated
    np.testing.assert_array_equal(clipped_actions, st_actions)  # same actions in the box ...
    assert clipped_grad == 0.0 and st_grad > 0.0  # ... but only the straight-through bound still learns
    raw = sample_actions(ConsistencyHead(configs["straight_through"], A).apply,
                         jax.tree_util.tree_map(lambda x: 50.0 * x, params), emb, state, jax.random.PRNGKey(0),
                         configs["straight_through"], A, bounded=False)
    assert float(jnp.max(jnp.abs(raw))) > 1.0  # the unbounded output the BC loss reads


def test_samplers(head):
    module, params, (emb, state) = head

    @jax.jit
    def samples(rng):
        sample = lambda key, **kw: sample_actions(module.apply, params, emb, state, key, TINY.head, A, **kw)
        return (sample(rng), sample(None, deterministic=True), sample(rng, repeat=3),
                sample(rng, steps=3, repeat=3))

    one, det1, many, multi = samples(jax.random.PRNGKey(7))
    other, det2, _, _ = samples(jax.random.PRNGKey(8))
    assert one.shape == (B, A) and many.shape == multi.shape == (B, 3, A)
    assert not np.allclose(many[:, 0], many[:, 1])  # independent noise per sample
    np.testing.assert_array_equal(det1, det2)  # the fixed evaluation noise, whatever rng says
    assert not np.allclose(det1, one) and not np.allclose(one, other)
    levels = multistep_sigmas(TINY.head, 4)
    assert len(levels) == 3 and np.all(np.diff(levels) < 0) and 0.002 < levels[-1] < levels[0] < 80
    assert float(jnp.max(jnp.abs(multi))) <= 1.0 and not np.allclose(multi, many)


# ---------------------------------------------------------------- critic


def observation(seed=0, batch=B):
    keys = jax.random.split(jax.random.PRNGKey(seed), 4)
    images = jax.random.randint(keys[2], (2, batch, 64, 64, 3), 0, 256).astype(jnp.uint8)
    return {"embedding": jax.random.normal(keys[0], (batch, E)), "state": jax.random.normal(keys[1], (batch, S)),
            "image_front": images[0], "image_wrist": images[1]}


@pytest.fixture(scope="module")
def critics():
    """Embedding critic with its real initialisation; pixel critic with random parameters."""
    modules = {mode: Critic(dataclasses.replace(TINY.critic, input=mode), CAMERAS) for mode in ("embedding", "pixels")}
    init = jax.jit(modules["embedding"].init)(jax.random.PRNGKey(0), observation(), jnp.zeros((B, A)))
    return {"embedding": (modules["embedding"], init["params"]),
            "pixels": (modules["pixels"], random_params(modules["pixels"], observation(), jnp.zeros((B, A))))}


@pytest.mark.parametrize("mode", ["embedding", "pixels"])
def test_critic_shapes_and_single_encoding(critics, mode):
    module, params = critics[mode]
    obs = observation(1)
    actions = jax.random.uniform(jax.random.PRNGKey(2), (B, 3, A), minval=-1, maxval=1)
    single = jax.eval_shape(lambda: module.apply({"params": params}, obs, actions[:, 0]))
    assert single.shape == (2, B)

    @jax.jit
    def run(params, obs, actions, keys):
        q = lambda o, a, **kw: module.apply({"params": params}, o, a, **kw)
        tiled = jax.tree_util.tree_map(lambda x: jnp.repeat(x, 3, axis=0), obs)  # each action on its own
        separate = q(tiled, actions.reshape(B * 3, A)).reshape(2, B, 3)
        train = jax.vmap(lambda k: q(obs, actions, train=True, rngs={"dropout": k}))(keys)
        return q(obs, actions), separate, train

    multi, separate, train = run(params, obs, actions, jax.random.split(jax.random.PRNGKey(3)))
    assert multi.shape == (2, B, 3)
    np.testing.assert_allclose(multi, separate, atol=1e-5)
    assert not np.allclose(multi[0], multi[1])  # members are initialised independently
    # Dropout on image features while training (pixels); the embedding critic has none.
    assert np.allclose(train[0], train[1]) == (mode == "embedding")
    # The observation is encoded once: every conv runs on the B images, not B * n.
    jaxpr = jax.make_jaxpr(lambda a: module.apply({"params": params}, obs, a))(actions)
    convs = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "conv_general_dilated"]
    assert (len(convs) > 0) == (mode == "pixels")
    assert all(e.invars[0].aval.shape[0] == B for e in convs)


def test_random_crop():
    images = jax.random.randint(jax.random.PRNGKey(0), (3, 5, 8, 10, 3), 0, 256).astype(jnp.uint8)
    assert random_crop(images, jax.random.PRNGKey(1), 0) is images
    out = random_crop(images, jax.random.PRNGKey(1), 2)
    assert out.shape == images.shape and out.dtype == images.dtype
    padded = np.pad(np.asarray(images).reshape(15, 8, 10, 3), ((0, 0), (2, 2), (2, 2), (0, 0)), mode="edge")
    offsets = set()
    for i, crop in enumerate(np.asarray(out).reshape(15, 8, 10, 3)):
        found = [(y, x) for y in range(5) for x in range(5) if np.array_equal(padded[i, y:y + 8, x:x + 10], crop)]
        assert found, f"image {i} is not a crop of its padded original"
        offsets.add(found[0])
    assert len(offsets) > 1  # independent offsets per image


@pytest.mark.parametrize("suffix", [".npz", ".msgpack"])
def test_load_encoder_params(critics, tmp_path, suffix):
    module, target = critics["pixels"]
    source = jax.tree_util.tree_map(lambda x: x + 1.0, target)
    path = tmp_path / f"resnet{suffix}"
    save_encoder_params(source, path, "front")
    loaded = load_encoder_params(target, path, "front")
    equal = lambda a, b: all(jax.tree_util.tree_leaves(jax.tree_util.tree_map(np.array_equal, a, b)))
    assert equal(loaded["encoder_front"]["resnet"], source["encoder_front"]["resnet"])
    assert not equal(target["encoder_front"]["resnet"], source["encoder_front"]["resnet"])
    for key in ("encoder_wrist", "ensemble", "proprio"):
        assert equal(loaded[key], target[key])
    assert equal(loaded["encoder_front"]["spatial"], target["encoder_front"]["spatial"])
    wider = Critic(dataclasses.replace(module.config, encoder_widths=(8, 16, 32, 48)), CAMERAS)
    shapes = jax.eval_shape(lambda: wider.init(jax.random.PRNGKey(0), observation(), jnp.zeros((B, A))))["params"]
    with pytest.raises(ValueError, match="'stage4/conv1/kernel'"):
        load_encoder_params(shapes, path, "front")
    with pytest.raises(KeyError, match="top"):
        load_encoder_params(target, path, "top")


# ---------------------------------------------------------------- tokenizer


def test_tokenizer():
    ids, mask = tokenize(["Pick up the RED cube, please.", "stack"], 8, 512)
    assert ids.dtype == np.int32 and mask.dtype == bool and ids.shape == mask.shape == (2, 8)
    # Pinned: the ids must never change between processes, machines or versions.
    np.testing.assert_array_equal(ids, [[275, 312, 470, 77, 410, 430, 442, 10], [464, 0, 0, 0, 0, 0, 0, 0]])
    assert ids[0, 0] == zlib.crc32(b"pick") % 510 + 2
    np.testing.assert_array_equal(mask[1], [True] + [False] * 7)
    assert mask[0].all()  # pick up the red cube , please . = 8 pieces (punctuation marks are pieces)
    long_ids, long_mask = tokenize("PICK up the red cube,please. and then more", 8, 512)
    np.testing.assert_array_equal(long_ids, ids[:1])  # truncated to the first 8 pieces, case-insensitive
    assert long_mask.all()
    same, _ = tokenize([b"stack"], 8, 512)
    np.testing.assert_array_equal(same[0], ids[1])
    assert np.all((ids[mask] >= 2) & (ids[mask] < 512))


# ---------------------------------------------------------------- backbone


def backbone_inputs(seed=0, batch=2):
    keys = jax.random.split(jax.random.PRNGKey(seed), 3)
    window = TINY.backbone.window
    ids, mask = tokenize(["pick up the cube"] * batch, TINY.backbone.max_text_tokens, TINY.backbone.vocab_size)
    return dict(
        images={"front": jax.random.randint(keys[0], (batch, window, 32, 32, 3), 0, 256).astype(jnp.uint8),
                "wrist": jax.random.randint(keys[1], (batch, window, 16, 16, 3), 0, 256).astype(jnp.uint8)},
        state=jax.random.normal(keys[2], (batch, window, S)), text_ids=jnp.asarray(ids), text_mask=jnp.asarray(mask),
        timestep_mask=jnp.ones((batch, window), bool))


@pytest.fixture(scope="module")
def backbone():
    module = VLABackbone(TINY.backbone, CAMERAS, S)
    params = random_params(module, **backbone_inputs())
    apply = jax.jit(lambda p, inputs: module.apply({"params": p}, **inputs, all_frames=True,
                                                   mutable=["intermediates"]))
    return module, params, apply


def test_backbone_shapes_and_params(backbone):
    module, params, apply = backbone
    out = jax.eval_shape(lambda: module.apply({"params": params}, **backbone_inputs()))
    assert out.shape == (2, 64) and out.dtype == jnp.float32
    frames, _ = apply(params, backbone_inputs())
    assert frames.shape == (2, 2, 64) and bool(jnp.all(jnp.isfinite(frames)))
    assert 1e5 < n_params(params) < 1e6, n_params(params)


def test_backbone_attention_rules(backbone):
    _, params, apply = backbone
    base = backbone_inputs()
    frames, inter = apply(params, base)
    # Causality: changing the last frame's observations leaves frame 0's readout unchanged.
    later = dict(base, state=base["state"].at[:, 1].add(1.0),
                 images={k: v.at[:, 1].set(255 - v[:, 1]) for k, v in base["images"].items()})
    changed, _ = apply(params, later)
    np.testing.assert_allclose(changed[:, 0], frames[:, 0], atol=1e-5)
    assert not np.allclose(changed[:, 1], frames[:, 1], atol=1e-3)
    # Padded text tokens and padding frames are never attended to.
    text = dict(base, text_ids=jnp.where(base["text_mask"], base["text_ids"], 77))
    np.testing.assert_allclose(apply(params, text)[0][:, 1], frames[:, 1], atol=1e-5)
    padded = dict(base, timestep_mask=base["timestep_mask"].at[:, 0].set(False))
    moved = dict(padded, state=padded["state"].at[:, 0].add(3.0))
    np.testing.assert_allclose(apply(params, moved)[0][:, 1], apply(params, padded)[0][:, 1], atol=1e-5)
    # Nothing but readouts attends to readouts: other tokens ignore the readout parameters.
    poked = dict(params, readouts=jax.random.normal(jax.random.PRNGKey(5), params["readouts"].shape))
    tokens, poked_tokens = inter["intermediates"]["tokens"][0], apply(poked, base)[1]["intermediates"]["tokens"][0]
    num_task = base["text_ids"].shape[1]
    kind, _ = token_layout(num_task, (tokens.shape[1] - num_task) // 2 - 1, 1, 2)
    np.testing.assert_allclose(poked_tokens[:, kind != 2], tokens[:, kind != 2], atol=1e-5)
    assert not np.allclose(poked_tokens[:, kind == 2], tokens[:, kind == 2], atol=1e-3)


def test_patch_embedding_is_the_strided_conv():
    """The einsum patchify computes nn.Conv(kernel = stride = p, VALID) with its parameters and
    initial values, so checkpoints of either load into the other."""
    x = jax.random.uniform(jax.random.PRNGKey(0), (3, 36, 20, 3), minval=-1, maxval=1)  # remainders dropped
    conv, fast = nn.Conv(8, (8, 8), (8, 8), padding="VALID"), PatchEmbedding(8, 8)
    params = conv.init(jax.random.PRNGKey(1), x)
    same = jax.tree_util.tree_map(lambda a, b: a.shape == b.shape and bool(jnp.all(a == b)),
                                  params, fast.init(jax.random.PRNGKey(1), x))
    assert all(jax.tree_util.tree_leaves(same))
    np.testing.assert_allclose(jax.jit(fast.apply)(params, x), jax.jit(conv.apply)(params, x), atol=1e-5)
    grad = lambda module: jax.jit(jax.grad(lambda p: jnp.sum(module.apply(p, x) * jnp.arange(8.0))))(params)["params"]
    for key in ("kernel", "bias"):
        np.testing.assert_allclose(grad(fast)[key], grad(conv)[key], rtol=1e-4, atol=1e-5)


class ReferenceBlock(nn.Module):
    """The backbone block as written with flax's own attention (boolean mask)."""

    width: int
    heads: int
    mlp_ratio: int

    @nn.compact
    def __call__(self, x, mask):
        y = nn.MultiHeadDotProductAttention(num_heads=self.heads, qkv_features=self.width, deterministic=True,
                                            kernel_init=nn.initializers.xavier_uniform(),
                                            name="attention")(nn.LayerNorm(name="norm1")(x), mask=mask)
        x = x + y
        y = nn.gelu(dense(self.mlp_ratio * self.width, name="mlp1")(nn.LayerNorm(name="norm2")(x)))
        return x + dense(self.width, name="mlp2")(y)


def test_transformer_block_is_flax_attention():
    """Same parameter tree, initial values and function as flax's MultiHeadDotProductAttention
    block; with `queries`, exactly those rows of the full output."""
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 9, 16))
    mask = (jax.random.uniform(jax.random.PRNGKey(1), (2, 1, 9, 9)) > 0.5) | jnp.eye(9, dtype=bool)
    reference, fast = ReferenceBlock(16, 2, 4), TransformerBlock(16, 2, 4, 0.0)
    params = reference.init(jax.random.PRNGKey(2), x, mask)
    same = jax.tree_util.tree_map(lambda a, b: a.shape == b.shape and bool(jnp.all(a == b)),
                                  params, fast.init(jax.random.PRNGKey(2), x, attention_bias(mask)))
    assert all(jax.tree_util.tree_leaves(same))
    expected = jax.jit(reference.apply)(params, x, mask)
    out, (keys, values) = jax.jit(fast.apply)(params, x, attention_bias(mask))
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert keys.shape == values.shape == (2, 2, 9, 8)  # [B, heads, N, head_dim]: what a cache keeps
    rows = np.array([2, 5, 8])
    some, _ = jax.jit(lambda p, x, b: fast.apply(p, x, b, queries=rows))(params, x, attention_bias(mask)[:, :, rows])
    np.testing.assert_allclose(some, expected[:, rows], atol=1e-5)


def test_backbone_computes_only_the_readouts_it_returns(backbone):
    """The last block runs only the returned readouts: the same embeddings as the full token
    sequence (computed when it is asked for as an intermediate)."""
    module, params, apply = backbone
    inputs = dict(backbone_inputs(seed=3), timestep_mask=jnp.array([[False, True], [True, True]]))
    full, _ = apply(params, inputs)
    readouts = jax.jit(lambda p, inputs, all_frames: module.apply({"params": p}, **inputs, all_frames=all_frames),
                       static_argnums=2)
    np.testing.assert_allclose(readouts(params, inputs, True), full, atol=1e-5)
    np.testing.assert_allclose(readouts(params, inputs, False), full[:, -1], atol=1e-5)


@pytest.mark.parametrize("window", [2, 1])
def test_step_by_step_backbone_equals_the_whole_window(window):
    """Acting caches the task's and the previous frame's keys/values and computes only the new
    frame: the embedding of every step of two episodes (padding at each start) is the whole
    window's."""
    module = VLABackbone(dataclasses.replace(TINY.backbone, window=window), CAMERAS, S)
    steps = backbone_inputs(seed=4, batch=5)  # five frames of one episode
    images = {cam: x[:, 0] for cam, x in steps["images"].items()}
    state = steps["state"][:, 0]
    ids, mask = steps["text_ids"][:1], steps["text_mask"][:1]
    params = random_params(module, {cam: x[:1, None].repeat(window, 1) for cam, x in images.items()},
                           state[:1, None].repeat(window, 1), ids, mask)
    method = lambda name: jax.jit(lambda *args: module.apply({"params": params}, *args, method=getattr(VLABackbone, name)))
    stream_frame, stream_step = method("stream_frame"), method("stream_step")
    whole = jax.jit(lambda *args: module.apply({"params": params}, *args))
    task = method("stream_task")(ids, mask)
    frame = lambda t: ({cam: x[t:t + 1] for cam, x in images.items()}, state[t:t + 1])
    context = stream_frame(task, *frame(3)) if window == 2 else task  # any frame: masked at a start
    for start in (0, 2):  # a second episode starts at frame 2
        for t in range(start, 5):
            streamed = stream_step(context, jnp.array([t > start]), *frame(t))
            frames = np.maximum(np.arange(t - window + 1, t + 1), start)
            expected = whole({cam: x[frames][None] for cam, x in images.items()}, state[frames][None], ids, mask,
                             jnp.asarray(np.arange(t - window + 1, t + 1) >= start)[None])
            np.testing.assert_allclose(streamed, expected, atol=1e-5)
            if window == 2:
                context = stream_frame(task, *frame(t))


def test_step_by_step_needs_a_window_of_at_most_two():
    wide = VLABackbone(dataclasses.replace(TINY.backbone, window=3), CAMERAS, S)
    ids, mask = tokenize(["pick"], TINY.backbone.max_text_tokens, TINY.backbone.vocab_size)
    with pytest.raises(ValueError, match="window <= 2"):
        jax.eval_shape(lambda: wide.init(jax.random.PRNGKey(0), ids, mask, method=VLABackbone.stream_task))


def test_attention_mask_by_hand():
    kind, frame = token_layout(num_task=2, num_obs=2, num_readouts=1, window=2)
    np.testing.assert_array_equal(kind, [0, 0, 1, 1, 2, 1, 1, 2])
    np.testing.assert_array_equal(frame, [-1, -1, 0, 0, 0, 1, 1, 1])
    mask = np.asarray(attention_mask(kind, frame, jnp.array([[True, False]]), jnp.array([[True, True]])))[0]
    expected = np.array([  # rows attend to columns; column 1 is padded text (only itself)
        [1, 0, 0, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0, 0],
        [1, 0, 1, 1, 0, 0, 0, 0],
        [1, 0, 1, 1, 0, 0, 0, 0],
        [1, 0, 1, 1, 1, 0, 0, 0],
        [1, 0, 1, 1, 0, 1, 1, 0],
        [1, 0, 1, 1, 0, 1, 1, 0],
        [1, 0, 1, 1, 0, 1, 1, 1]], bool)
    np.testing.assert_array_equal(mask, expected)
    padded = np.asarray(attention_mask(kind, frame, jnp.array([[True, True]]), jnp.array([[False, True]])))[0]
    assert not padded[5:, 2:5].any() and padded[7, :2].all()


def test_backbone_checkpoint_and_language_embedding(backbone, tmp_path):
    module, params, apply = backbone
    path = tmp_path / "backbone.msgpack"
    save_backbone_params(params, path)
    loaded = load_backbone_params(path, target=params)
    np.testing.assert_array_equal(apply(loaded, backbone_inputs())[0], apply(params, backbone_inputs())[0])
    other = VLABackbone(dataclasses.replace(TINY.backbone, mlp_ratio=2), CAMERAS, S)
    shapes = jax.eval_shape(lambda: other.init(jax.random.PRNGKey(0), **backbone_inputs()))["params"]
    with pytest.raises(ValueError, match="'block0/mlp1/"):
        load_backbone_params(path, target=shapes)
    lang = VLABackbone(dataclasses.replace(TINY.backbone, language_embedding_dim=32), CAMERAS, S)
    inputs = dict(backbone_inputs(), text_ids=None, text_mask=None, language_embedding=jnp.ones((2, 32)))
    out, variables = jax.eval_shape(lambda: lang.init_with_output(jax.random.PRNGKey(0), **inputs))
    assert out.shape == (2, 64) and variables["params"]["language"]["kernel"].shape == (32, 64)


def test_small_backbone_shapes():
    cfg = get_config("small").backbone
    module = VLABackbone(cfg, CAMERAS, S)
    inputs = dict(backbone_inputs(batch=1),
                  images={"front": jnp.zeros((1, 2, 128, 128, 3), jnp.uint8),
                          "wrist": jnp.zeros((1, 2, 64, 64, 3), jnp.uint8)})
    ids, mask = tokenize(["pick"], cfg.max_text_tokens, cfg.vocab_size)
    inputs.update(text_ids=jnp.asarray(ids), text_mask=jnp.asarray(mask))
    out, variables = jax.eval_shape(lambda: module.init_with_output(jax.random.PRNGKey(0), **inputs))
    params = variables["params"]
    assert out.shape == (1, 384) and cfg.width == 384
    assert sorted(k for k in params if k.startswith("block")) == sorted(f"block{i}" for i in range(12))
    assert params["block11"]["attention"]["query"]["kernel"].shape == (384, 6, 64)
    assert 2e7 < n_params(params) < 3e7, n_params(params)


@pytest.mark.parametrize("shape", [(4, 32, 32, 8), (2, 33, 31, 3), (1, 5, 5, 1)])
def test_encoder_max_pool_matches_flax_and_its_gradient_has_no_select_and_scatter(shape):
    x = jnp.asarray(np.random.default_rng(0).normal(size=shape), jnp.float32)
    reference = nn.max_pool(x, (3, 3), (2, 2), padding="SAME")
    assert jnp.array_equal(max_pool_same(x, 3, 2), reference)
    weights = jnp.asarray(np.random.default_rng(1).normal(size=reference.shape), jnp.float32)
    ours = jax.grad(lambda v: (max_pool_same(v, 3, 2) * weights).sum())
    flax_grad = jax.grad(lambda v: (nn.max_pool(v, (3, 3), (2, 2), padding="SAME") * weights).sum())(x)
    np.testing.assert_array_equal(ours(x), flax_grad)  # random values: no ties, the same routing
    # select_and_scatter (reduce_window's gradient) and scatters run as scalar loops on XLA CPU.
    compiled = jax.jit(ours).lower(x).compile().as_text()
    assert "select-and-scatter" not in compiled and "scatter(" not in compiled and " while(" not in compiled

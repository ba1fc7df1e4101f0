"""The acting policy runs the backbone step by step; its actions and embeddings are the whole window's."""

import jax
import jax.numpy as jnp
import numpy as np
from conftest import random_params

from vlarft.agents.actor import ConRFTPolicy
from vlarft.agents.config import get_config
from vlarft.agents.networks import ConsistencyHead, VLABackbone, sample_actions, tokenize
from vlarft.agents.observation import StateNormalizer, episode_windows
from vlarft.datasets.frames import as_stored

CONFIG = get_config("tiny")
CAMERAS, S, A = ("front", "wrist"), 19, 7
INSTRUCTION = "pick up the cube"


def episode(seed: int, steps: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"image_front": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
             "image_wrist": rng.integers(0, 256, (16, 16, 3), dtype=np.uint8),
             "state": rng.normal(size=S).astype(np.float32)} for _ in range(steps)]


BACKBONE, HEAD = VLABackbone(CONFIG.backbone, CAMERAS, S), ConsistencyHead(CONFIG.head, A)
IDS, TEXT_MASK = tokenize([INSTRUCTION], CONFIG.backbone.max_text_tokens, CONFIG.backbone.vocab_size)


@jax.jit
def act_on_windows(backbone_params, head_params, windows, mask):
    """(embedding, deterministic action) of each step from its whole W-frame window; the head
    sees one step at a time, as when acting (its fixed evaluation noise is drawn per call)."""
    images = {cam: windows[f"image_{cam}"] for cam in CAMERAS}
    ids, text_mask = (jnp.repeat(x, len(mask), axis=0) for x in (IDS, TEXT_MASK))
    embedding = BACKBONE.apply({"params": backbone_params}, images, windows["state"], ids, text_mask, mask)
    act = lambda e, s: sample_actions(HEAD.apply, head_params, e[None], s[None], None, CONFIG.head, A,
                                      deterministic=True)[0]
    return embedding, jax.vmap(act)(embedding, windows["state"][:, -1])


def whole_window(backbone_params, head_params, observations: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    stored = {key: np.stack([as_stored(o[key]) if key.startswith("image_") else o[key] for o in observations])
              for key in observations[0]}
    windows, mask = episode_windows(stored, CONFIG.backbone.window)
    return tuple(np.asarray(x) for x in act_on_windows(backbone_params, head_params, windows, mask))


def test_policy_acts_step_by_step_as_on_the_whole_window():
    first, second = episode(0, 4), episode(1, 4)
    images = {c: jnp.asarray(np.stack([first[0][f"image_{c}"]] * 2))[None] for c in CAMERAS}
    params, other = (random_params(BACKBONE, images, jnp.zeros((1, 2, S)), IDS, TEXT_MASK, seed=seed) for seed in (0, 1))
    head_params = random_params(HEAD, jnp.zeros((1, A)), 1.0, jnp.zeros((1, 64)), jnp.zeros((1, S)))
    policy = ConRFTPolicy(CONFIG, params, head_params, cameras=CAMERAS, state_dim=S, action_dim=A,
                          normalizer=StateNormalizer.identity(S), instruction=INSTRUCTION)
    assert policy.streaming

    def run(observations, swap_at=None):
        policy.reset()
        embeddings, actions = [], []
        for t, observation in enumerate(observations):
            if t == swap_at:  # new backbone parameters mid-episode: the cached frame is recomputed
                policy.set_params(backbone_params=other)
            actions.append(policy.act(observation))
            embeddings.append(policy.last_embedding)
        return np.stack(embeddings), np.stack(actions)

    for observations, swap_at in ((first, None), (second, None), (first, 2)):
        got_embedding, got_action = run(observations, swap_at)
        if swap_at is None:
            expected_embedding, expected_action = whole_window(params, head_params, observations)
        else:
            before, after = whole_window(params, head_params, observations), whole_window(other, head_params, observations)
            expected_embedding = np.concatenate([before[0][:swap_at], after[0][swap_at:]])
            expected_action = np.concatenate([before[1][:swap_at], after[1][swap_at:]])
        np.testing.assert_allclose(got_embedding, expected_embedding, atol=1e-5)
        np.testing.assert_allclose(got_action, expected_action, atol=1e-5)


def test_warm_up_compiles_and_leaves_the_policy_as_it_was():
    """A robot's first step must not wait for XLA: `warm_up` compiles `act` on a blank observation
    of the env's space; the random key and episode state stay as they were (same actions after)."""
    import gymnasium as gym

    observations = episode(2, 3)
    images = {c: jnp.asarray(np.stack([observations[0][f"image_{c}"]] * 2))[None] for c in CAMERAS}
    params = random_params(BACKBONE, images, jnp.zeros((1, 2, S)), IDS, TEXT_MASK, seed=0)
    head_params = random_params(HEAD, jnp.zeros((1, A)), 1.0, jnp.zeros((1, 64)), jnp.zeros((1, S)))
    make = lambda: ConRFTPolicy(CONFIG, params, head_params, cameras=CAMERAS, state_dim=S, action_dim=A,
                                normalizer=StateNormalizer.identity(S), instruction=INSTRUCTION,
                                deterministic=False, seed=3)
    space = gym.spaces.Dict({"image_front": gym.spaces.Box(0, 255, (32, 32, 3), np.uint8),
                             "image_wrist": gym.spaces.Box(0, 255, (16, 16, 3), np.uint8),
                             "state": gym.spaces.Box(-np.inf, np.inf, (S,), np.float32)})
    warm, cold = make(), make()
    warm.warm_up(space)
    assert warm._act._cache_size() == 1 and cold._act._cache_size() == 0  # compiled before any real step
    for policy in (warm, cold):
        policy.reset()
    for observation in observations:
        np.testing.assert_array_equal(warm.act(observation), cold.act(observation))
        np.testing.assert_array_equal(warm.last_embedding, cold.last_embedding)

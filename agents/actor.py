"""The acting policy: env observation -> backbone embedding -> consistency head -> action.

`last_embedding` keeps the backbone embedding of the last observation, which online actors
store in replay so the learner never runs the backbone.

Camera frames go through `datasets.schema.as_stored` first (the dataset's JPEG round trip), so the
policy acting on a live frame sees exactly what SFT, the cached embeddings and the critic saw of
the recorded one: demo and online transitions carry embeddings of the same input distribution.

It keeps the W-frame history of the running episode, tokenizes the instruction once, and runs
one jitted function per step. `deterministic=True` (evaluation) uses the head's fixed noise, so
the same observations always give the same actions; `steps` > 1 uses the k-step sampler.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from vlarft.agents.config import AgentConfig
from vlarft.agents.networks import ConsistencyHead, VLABackbone, sample_actions, tokenize
from vlarft.agents.observation import FrameHistory, StateNormalizer
from vlarft.datasets.schema import as_stored


class ConRFTPolicy:
    """Acts in any environment of the robot contract."""

    def __init__(self, config: AgentConfig, backbone_params, head_params, *, cameras: tuple[str, ...],
                 state_dim: int, action_dim: int, normalizer: StateNormalizer, instruction: str,
                 deterministic: bool = True, steps: int = 1, seed: int = 0, language_embedding=None):
        self.config, self.cameras, self.normalizer = config, tuple(cameras), normalizer
        self.backbone_params, self.head_params = backbone_params, head_params
        self.history = FrameHistory(config.backbone.window)
        self.text_ids, self.text_mask = tokenize([instruction], config.backbone.max_text_tokens,
                                                 config.backbone.vocab_size)
        self.rng = jax.random.PRNGKey(seed)
        backbone = VLABackbone(config.backbone, self.cameras, state_dim)
        head = ConsistencyHead(config.head, action_dim)

        language = None if language_embedding is None else jnp.asarray(language_embedding, jnp.float32)[None]

        def act(backbone_params, head_params, images, states, mask, text_ids, text_mask, rng):
            embedding = backbone.apply({"params": backbone_params}, images, states, text_ids, text_mask, mask,
                                       language_embedding=language)
            action = sample_actions(head.apply, head_params, embedding, states[:, -1], rng, config.head, action_dim,
                                    steps=steps, deterministic=deterministic)
            return action[0], embedding[0]

        self._act = jax.jit(act)
        self.last_embedding: np.ndarray | None = None  # of the observation `act` saw last

    def set_params(self, backbone_params=None, head_params=None) -> None:
        """Swap in new parameters (takes effect at the next step; copied to the device once here)."""
        if backbone_params is not None:
            self.backbone_params = jax.device_put(backbone_params)
        if head_params is not None:
            self.head_params = jax.device_put(head_params)

    def reset(self) -> None:
        self.history.reset()

    def act(self, observation: dict) -> np.ndarray:
        frame = {f"image_{cam}": as_stored(observation[f"image_{cam}"]) for cam in self.cameras}
        frame["state"] = self.normalizer(np.asarray(observation["state"], np.float32)).astype(np.float32)
        window, mask = self.history.push(frame)
        images = {cam: jnp.asarray(window[f"image_{cam}"]) for cam in self.cameras}
        self.rng, key = jax.random.split(self.rng)
        action, embedding = self._act(self.backbone_params, self.head_params, images, jnp.asarray(window["state"]),
                                      jnp.asarray(mask), self.text_ids, self.text_mask, key)
        self.last_embedding = np.asarray(embedding, np.float32)
        return np.asarray(action, np.float32)

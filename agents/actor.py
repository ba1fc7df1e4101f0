"""The acting policy: env observation -> backbone embedding -> consistency head -> action.

`last_embedding` keeps the backbone embedding of the last observation, which online actors
store in replay so the learner never runs the backbone.

Camera frames go through `datasets.frames.as_stored` first (the dataset's JPEG round trip), so the
policy acting on a live frame sees exactly what SFT, the cached embeddings and the critic saw of
the recorded one: demo and online transitions carry embeddings of the same input distribution.

It runs the backbone step by step (window <= 2, the default): the instruction's keys/values are
computed once, each step computes only the new frame's tokens against them and the previous
frame's cached keys/values (one jitted call: backbone step + head), and after the action is out
the new frame is cached for the next step, off the observation-to-action path. The embedding is
the whole window's (`VLABackbone.stream_step`). A wider window, or an Octo backbone, runs the
whole W-frame history every step. `deterministic=True` (evaluation) uses the head's fixed noise, so the same
observations always give the same actions; `steps` > 1 uses the k-step sampler.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from vlarft.agents.config import AgentConfig
from vlarft.agents.networks import ConsistencyHead, VLABackbone, make_backbone, sample_actions, tokenize
from vlarft.agents.observation import FrameHistory, StateNormalizer
from vlarft.datasets.frames import as_stored


class ConRFTPolicy:
    """Acts in any environment of the robot contract."""

    def __init__(self, config: AgentConfig, backbone_params, head_params, *, cameras: tuple[str, ...],
                 state_dim: int, action_dim: int, normalizer: StateNormalizer, instruction: str,
                 deterministic: bool = True, steps: int = 1, seed: int = 0, language_embedding=None,
                 step_by_step: bool = True, action_head=None):
        """`step_by_step=False` runs the whole window every step (the reference the step-by-step
        path is tested and benchmarked against; also the only way for a window wider than 2).
        `action_head(head_params, observation, key)` -> actions [1, A] replaces the consistency
        head (another agent's actor, `agents/registry.py`); `observation` holds `embedding`,
        the normalised `state` and the current `image_<cam>` frames, each with a batch axis of 1."""
        self.config, self.cameras, self.normalizer = config, tuple(cameras), normalizer
        self.head_params = head_params
        self.history = FrameHistory(config.backbone.window)
        self.text_ids, self.text_mask = tokenize([instruction], config.backbone.max_text_tokens,
                                                 config.backbone.vocab_size)
        self.rng = jax.random.PRNGKey(seed)
        # Octo's readouts attend to earlier readouts: its backbone runs the whole window each step
        self.streaming = step_by_step and config.backbone.window <= 2 and config.backbone.architecture == "vlarft"
        backbone = make_backbone(config.backbone, self.cameras, state_dim)
        head = ConsistencyHead(config.head, action_dim)
        language = None if language_embedding is None else jnp.asarray(language_embedding, jnp.float32)[None]

        def action_of(head_params, embedding, state, images, rng):  # -> (action [A], embedding [E], next rng)
            rng, key = jax.random.split(rng)
            if action_head is not None:
                observation = {"embedding": embedding, "state": state, **{f"image_{c}": x for c, x in images.items()}}
                return action_head(head_params, observation, key)[0], embedding[0], rng
            action = sample_actions(head.apply, head_params, embedding, state, key, config.head, action_dim,
                                    steps=steps, deterministic=deterministic)
            return action[0], embedding[0], rng

        def act_window(backbone_params, head_params, images, states, mask, rng):
            embedding = backbone.apply({"params": backbone_params}, images, states, self.text_ids, self.text_mask, mask,
                                       language_embedding=language)
            return action_of(head_params, embedding, states[:, -1], {c: x[:, -1] for c, x in images.items()}, rng)

        def act_step(backbone_params, head_params, context, previous_valid, images, state, rng):
            embedding = backbone.apply({"params": backbone_params}, context, previous_valid, images, state,
                                       method=VLABackbone.stream_step)
            return action_of(head_params, embedding, state, images, rng)

        self._act = jax.jit(act_step if self.streaming else act_window)
        self._task_keys = jax.jit(lambda p: backbone.apply({"params": p}, self.text_ids, self.text_mask,
                                                          language_embedding=language, method=VLABackbone.stream_task))
        self._frame_keys = jax.jit(lambda p, task, images, state: backbone.apply(
            {"params": p}, task, images, state, method=VLABackbone.stream_frame))
        self._context = None  # cached keys/values: the task's, then (window 2) the previous frame's
        self._previous_valid = False  # False at an episode's first step (the previous frame is masked)
        self._last_frame = None  # (images, state) of the last step, to re-cache under new parameters
        self.backbone_params, self._task = None, None
        self.set_params(backbone_params=backbone_params)
        self.last_embedding: np.ndarray | None = None  # of the observation `act` saw last

    def set_params(self, backbone_params=None, head_params=None) -> None:
        """Swap in new parameters (takes effect at the next step; copied to the device once here)."""
        if backbone_params is not None:
            self.backbone_params = jax.device_put(backbone_params)
            if self.streaming:
                self._task = self._task_keys(self.backbone_params)
                self._context = self._task
                if self.config.backbone.window == 2 and self._last_frame is not None:
                    self._context = self._frame_keys(self.backbone_params, self._task, *self._last_frame)
        if head_params is not None:
            self.head_params = jax.device_put(head_params)

    def ready(self) -> None:
        """Waits for the work `act` left running after its action (caching the frame for the
        next step), e.g. to time the next step's observation-to-action latency alone."""
        jax.block_until_ready(self._context)

    def reset(self) -> None:
        self.history.reset()
        self._previous_valid = False

    def warm_up(self, observation_space) -> None:
        """Compiles `act` on a blank observation shaped as `observation_space` (a gym Dict), so the
        first real step is not held up by compilation (seconds on a CPU: a robot's control
        watchdog would stop the arm). The policy's random key and episode state are as before."""
        blank = {key: np.zeros(space.shape, space.dtype) for key, space in observation_space.spaces.items()
                 if key == "state" or key.startswith("image_")}
        saved = (self.rng, self._context, self._previous_valid, self._last_frame, self.last_embedding)
        self.reset()
        self.act(blank)
        if self.streaming:
            self.ready()
        self.rng, self._context, self._previous_valid, self._last_frame, self.last_embedding = saved
        self.reset()

    def act(self, observation: dict) -> np.ndarray:
        frame = {f"image_{cam}": as_stored(observation[f"image_{cam}"]) for cam in self.cameras}
        frame["state"] = self.normalizer(np.asarray(observation["state"], np.float32)).astype(np.float32)
        if not self.streaming:
            window, mask = self.history.push(frame)
            images = {cam: window[f"image_{cam}"] for cam in self.cameras}
            action, embedding, self.rng = self._act(self.backbone_params, self.head_params, images, window["state"],
                                                    mask, self.rng)
            self.last_embedding = np.asarray(embedding, np.float32)
            return np.asarray(action, np.float32)
        images = {cam: frame[f"image_{cam}"][None] for cam in self.cameras}
        state = frame["state"][None]
        window2 = self.config.backbone.window == 2
        if window2 and self._last_frame is None:  # the first step ever: a context of the right shapes, masked
            self._context = self._frame_keys(self.backbone_params, self._task, images, state)
        action, embedding, self.rng = self._act(self.backbone_params, self.head_params, self._context,
                                                np.array([self._previous_valid]), images, state, self.rng)
        action = np.asarray(action, np.float32)  # the observation-to-action path ends here
        if window2:  # cache this frame for the next step; runs while the robot moves
            self._context = self._frame_keys(self.backbone_params, self._task, images, state)
        self._previous_valid, self._last_frame = True, (images, state)
        self.last_embedding = np.asarray(embedding, np.float32)
        return action

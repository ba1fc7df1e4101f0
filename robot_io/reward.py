"""`RewardClassifierWrapper`: a learned success classifier as the env's sparse reward and success.

Every step the classifier's p(success) of the new observation is compared with `threshold`;
once it has been >= threshold for `consecutive` steps in a row, the step gets reward 1.0,
info["success"] = True and terminated = True (truncated = False). Any other step gets reward
0.0 and info["success"] = False. The env's own success is kept as info["env_success"] (for
logging: real robots rarely have one), p as info["success_probability"]; the env's own
termination (e.g. a safety stop, or the simulator's success) still ends the episode.

The classifier comes from `classifier_dir` (`tools/train_reward_classifier.py --out_dir`), or
any `probability_fn(observation) -> float` (tests, ensembles, a remote model). The agents code
is imported only when a classifier directory is loaded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gymnasium as gym

from vlarft.robot_io.contract import INFO_SUCCESS, image_key, notify_episode_end

INFO_ENV_SUCCESS = "env_success"
INFO_SUCCESS_PROBABILITY = "success_probability"


class RewardClassifierWrapper(gym.Wrapper):
    """Replaces the env's reward and success by a learned classifier's (see the module docstring).

    Args:
      env: any env following `robot_io/contract.py`.
      classifier_dir: a saved reward classifier (ignored when `probability_fn` is given).
      threshold: p(success) at or above which a step counts as a success step (> 1: never).
      consecutive: success steps in a row needed before the episode is declared a success.
      cameras: the env cameras fed to the classifier, in the classifier's camera order
        (default: the classifier's own camera names); lets a classifier trained on `front` read
        the env's `side`, say.
      probability_fn: observation -> p(success), used instead of loading `classifier_dir`
        (tests and advanced use); `cameras` is then not used.
    """

    def __init__(self, env: gym.Env, classifier_dir: str | None = None, threshold: float = 0.5,
                 consecutive: int = 1, cameras: Sequence[str] | None = None,
                 probability_fn: Callable[[Mapping[str, Any]], float] | None = None) -> None:
        super().__init__(env)
        if int(consecutive) != consecutive or consecutive < 1:
            raise ValueError(f"consecutive must be an integer >= 1, got {consecutive!r}")
        self.threshold, self.consecutive = float(threshold), int(consecutive)
        if probability_fn is None:
            if not classifier_dir:
                raise ValueError("RewardClassifierWrapper needs classifier_dir=... (or probability_fn=...)")
            probability_fn = self._load(classifier_dir, cameras)
        self.probability_fn = probability_fn
        self.streak = 0  # success steps in a row so far

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Reset the env and the success streak; info["success"] is False at the start."""
        observation, info = self.env.reset(seed=seed, options=options)
        self.streak = 0
        return observation, {**info, INFO_ENV_SUCCESS: bool(info.get(INFO_SUCCESS, False)), INFO_SUCCESS: False}

    def step(self, action: Any):
        """Step the env, then judge the new observation with the classifier."""
        observation, _, terminated, truncated, info = self.env.step(action)
        probability = float(self.probability_fn(observation))
        self.streak = self.streak + 1 if probability >= self.threshold else 0
        success = self.streak >= self.consecutive
        if success and not (terminated or truncated):
            notify_episode_end(self.env)
        info = {**info, INFO_ENV_SUCCESS: bool(info.get(INFO_SUCCESS, False)), INFO_SUCCESS: success,
                INFO_SUCCESS_PROBABILITY: probability}
        return observation, float(success), bool(terminated or success), bool(truncated and not success), info

    def _load(self, classifier_dir: str, cameras: Sequence[str] | None) -> Callable[[Mapping[str, Any]], float]:
        from vlarft.agents.reward_classifier import load_classifier

        classifier = load_classifier(classifier_dir)
        env_cameras = tuple(cameras) if cameras is not None else classifier.cameras
        if len(env_cameras) != len(classifier.cameras):
            raise ValueError(f"cameras={list(env_cameras)}: the classifier in {classifier_dir} reads "
                             f"{len(classifier.cameras)} camera(s) {list(classifier.cameras)}")
        spaces = getattr(self.env.observation_space, "spaces", {})
        missing = [cam for cam in env_cameras if image_key(cam) not in spaces]
        if missing:
            found = sorted(k for k in spaces if k.startswith("image_"))
            raise ValueError(f"the env has no camera(s) {missing} for the classifier in {classifier_dir} "
                             f"(env images: {found}); pass cameras=[...] to map them")
        keys = [(image_key(env_cam), image_key(cam)) for env_cam, cam in zip(env_cameras, classifier.cameras)]
        return lambda observation: classifier.predict_proba({ours: observation[env] for env, ours in keys})

"""Monte-Carlo returns-to-go: the Cal-QL reference values stored with every transition.

Convention (T real transitions t = 0..T-1 of one episode, shaped reward r'_t = r_t*scale + bias):

    G_t = r'_t + gamma * G_{t+1}

with the value after the last transition

    G_T = 0                    after a true terminal (`is_terminal`: the task ended),
    G_T = bias / (1 - gamma)   after a time-limit end (`is_last` alone): the episode is taken to
                               continue forever with the shaped "failure" reward 0*scale + bias.

So the two ends differ exactly when bias != 0, and a failed time-limit episode with 0 rewards
gets G_t = bias / (1 - gamma) at every step (what the ConRFT/HIL-SERL reference code assigns to
failed sparse-reward episodes). Hand-computable example, rewards [0, 0, 1], gamma 0.5:
terminal -> [0.25, 0.5, 1.0]; with scale 10, bias -1 (shaped [-1, -1, 9]) terminal ->
[0.75, 3.5, 9.0] and time-limit (G_3 = -1/0.5 = -2) -> [0.5, 3.0, 8.0].
"""

from __future__ import annotations

from typing import Mapping

import numpy as np


def time_limit_tail(gamma: float, reward_bias: float) -> float:
    """G_T after a time-limit end: the failure reward `reward_bias` received forever."""
    if reward_bias == 0.0:
        return 0.0
    if gamma >= 1.0:
        raise ValueError(f"gamma={gamma}: a time-limit tail with reward_bias={reward_bias} "
                         "diverges; use gamma < 1 or reward_bias = 0")
    return reward_bias / (1.0 - gamma)


def monte_carlo_returns(rewards, is_terminal_end: bool, gamma: float, reward_scale: float = 1.0,
                        reward_bias: float = 0.0) -> np.ndarray:
    """float32[T] discounted returns-to-go of the T real transitions of one episode.

    Args:
      rewards: the T rewards r_0..r_{T-1} (not the zero padding of the final RLDS step).
      is_terminal_end: the episode ended in a true terminal (else a time-limit end).
      gamma: discount in [0, 1].
      reward_scale, reward_bias: shaping r' = r * scale + bias (see the module docstring).
    """
    rewards = np.asarray(rewards, np.float64)
    if rewards.ndim != 1:
        raise ValueError(f"rewards must be 1-D, got shape {rewards.shape}")
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    shaped = rewards * reward_scale + reward_bias
    value = 0.0 if is_terminal_end else time_limit_tail(gamma, reward_bias)
    out = np.empty(len(shaped), np.float64)
    for t in range(len(shaped) - 1, -1, -1):
        value = shaped[t] + gamma * value
        out[t] = value
    return out.astype(np.float32)


def episode_returns(steps: Mapping[str, np.ndarray], return_config) -> np.ndarray:
    """`monte_carlo_returns` of an RLDS episode's step columns under a `ReturnConfig`.

    The last step is the final observation (its reward is padding); the episode ended in a
    terminal iff that step's `is_terminal` is set.
    """
    return monte_carlo_returns(steps["reward"][:-1], bool(steps["is_terminal"][-1]),
                               return_config.gamma, return_config.reward_scale,
                               return_config.reward_bias)

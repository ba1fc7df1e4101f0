"""Tanh-Gaussian policy (SAC / RLPD / HIL-SERL) over the critic's inputs.

`GaussianActor` encodes an observation exactly as a `Critic` of the same `CriticConfig` does
(its own copy of that encoder: the cached embedding + proprio projection, or per-camera ResNet
encoders + proprio), then an MLP gives the mean and log standard deviation of a Gaussian whose
samples are squashed by tanh into the action box [-1, 1].
"""

from __future__ import annotations

import math
from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from vlarft.agents.config import CriticConfig, SACConfig
from vlarft.agents.networks.common import MLP, dense
from vlarft.agents.networks.critic import Critic


class GaussianActor(nn.Module):
    """observation -> (mean [B, A], log_std [B, A]) of the pre-tanh Gaussian."""

    config: SACConfig
    encoder_config: CriticConfig
    cameras: tuple[str, ...]
    action_dim: int

    def setup(self):
        self.features = Critic(self.encoder_config, self.cameras)  # only its encoder is used
        self.mlp = MLP(self.config.hidden)
        self.mean = dense(self.action_dim)
        self.log_std = dense(self.action_dim)

    def __call__(self, observation: Mapping[str, jax.Array], train: bool = False):
        x = self.mlp(self.features.encode(observation, train))
        low, high = self.config.log_std_min, self.config.log_std_max
        log_std = low + 0.5 * (high - low) * (jnp.tanh(self.log_std(x)) + 1.0)
        return self.mean(x), log_std


def tanh_gaussian_sample(mean, log_std, key):
    """(action, log_prob): a = tanh(mean + std * z), log pi(a) with the tanh change of variables."""
    z = jax.random.normal(key, mean.shape, mean.dtype)
    pre = mean + jnp.exp(log_std) * z
    gaussian = -0.5 * z ** 2 - log_std - 0.5 * math.log(2 * math.pi)
    log_det = 2.0 * (math.log(2.0) - pre - jax.nn.softplus(-2.0 * pre))  # log(1 - tanh(pre)^2), stable
    return jnp.tanh(pre), jnp.sum(gaussian - log_det, axis=-1)


def gaussian_actions(actor_apply, params, observation, key, deterministic: bool):
    """Actions of the policy: tanh(mean) when `deterministic`, else a sample."""
    mean, log_std = actor_apply({"params": params}, observation)
    return jnp.tanh(mean) if deterministic else tanh_gaussian_sample(mean, log_std, key)[0]

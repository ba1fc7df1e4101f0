"""SAC losses of the RLPD / HIL-SERL baseline (`agents/rlpd.py`): TD with an ensemble-min
target and entropy backup, the entropy-regularised actor loss, and the temperature loss.
Pure functions of arrays, jit-able; conventions as `agents/losses.py` (bare `params`
collections, `critic_apply` is `Critic.apply`, `actor_apply` is `GaussianActor.apply`).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from vlarft.agents.losses import td_target
from vlarft.agents.networks.gaussian import tanh_gaussian_sample


def policy_sample(actor_apply: Callable, actor_params, observation, key):
    """(actions [B, A], log pi [B]) of the current policy."""
    mean, log_std = actor_apply({"params": actor_params}, observation)
    return tanh_gaussian_sample(mean, log_std, key)


def sac_critic_loss(critic_apply: Callable, critic_params, target_critic_params, actor_apply: Callable, actor_params,
                    alpha, batch: dict, rng, gamma: float, entropy_backup: bool = True) -> tuple[jax.Array, dict]:
    """L = mean_k mean_b (Q_k(s, a) - y)^2, y = r + gamma d (min_k Qbar_k(s', a') - alpha log pi(a'|s')),
    a' ~ pi(.|s') (no gradient; without `entropy_backup` the alpha term is left out)."""
    k_next, k_target, k_q = jax.random.split(rng, 3)
    next_actions, next_log_pi = policy_sample(actor_apply, jax.lax.stop_gradient(actor_params),
                                              batch["next_observations"], k_next)
    next_q = critic_apply({"params": target_critic_params}, batch["next_observations"], next_actions, train=True,
                          rngs={"dropout": k_target})
    if entropy_backup:
        next_q = next_q - alpha * next_log_pi[None]
    target = jax.lax.stop_gradient(td_target(batch["rewards"], batch["discounts"], gamma, next_q))
    q = critic_apply({"params": critic_params}, batch["observations"], batch["actions"], train=True,
                     rngs={"dropout": k_q})
    td = jnp.mean((q - target[None]) ** 2)
    return td, {"critic_loss": td, "td_loss": td, "q_data": jnp.mean(q), "q_target": jnp.mean(target)}


def sac_actor_loss(actor_params, actor_apply: Callable, critic_apply: Callable, critic_params, alpha, batch: dict,
                   rng) -> tuple[jax.Array, dict]:
    """L_pi = mean_b (alpha log pi(a|s) - mean_k Q_k(s, a)), a ~ pi(.|s) reparameterised; the
    critic frozen. Metrics: actor_loss, q_pi, entropy (-mean log pi)."""
    k_pi, k_q = jax.random.split(rng)
    obs = batch["observations"]
    actions, log_pi = policy_sample(actor_apply, actor_params, obs, k_pi)
    q = critic_apply({"params": jax.lax.stop_gradient(critic_params)}, obs, actions, train=True, rngs={"dropout": k_q})
    q_pi = jnp.mean(q, axis=0)
    loss = jnp.mean(alpha * log_pi - q_pi)
    return loss, {"actor_loss": loss, "q_pi": jnp.mean(q_pi), "entropy": -jnp.mean(log_pi)}


def temperature_loss(log_alpha, entropy, target_entropy: float) -> jax.Array:
    """L_alpha = alpha (H - H_target), alpha = exp(log_alpha), H the policy's entropy (no gradient):
    alpha falls while the entropy is above its target and rises below it."""
    return jnp.exp(log_alpha) * jax.lax.stop_gradient(entropy - target_entropy)

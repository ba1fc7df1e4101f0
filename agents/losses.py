"""ConRFT losses: consistency BC, TD with an ensemble-min target, the Cal-QL conservative term, and
the actor/critic objectives assembled from them. Pure functions of arrays, jit-able.

Conventions:
  * `head_apply(variables, x, sigma, embedding, state)` is `ConsistencyHead.apply`;
    `critic_apply(variables, observation, actions, train=..., rngs={"dropout": key})` is
    `Critic.apply`. Parameters are always the bare `params` collection (wrapped here as
    {"params": params}).
  * A `batch` is a dict:
      observations, next_observations: dicts with "embedding" [B, E] and "state" [B, S] (what the
        head reads) plus whatever the critic reads ("image_<cam>" uint8 [B, H, W, 3] in pixels
        mode; crop-augment them beforehand with `networks.critic.random_crop_observation`);
      actions [B, A]; rewards [B]; discounts [B] (env discount: 0 on the transition into a
      terminal, else 1; multiplied with LossConfig.discount); mc_returns [B] (Cal-QL lower
      bounds, needed only when cql_alpha > 0).
  * Every critic evaluation here runs with train=True (dropout on the pixel features, as the
    reference); the embedding critic has no dropout, so there it makes no difference.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from vlarft.agents.config import ConsistencyConfig, LossConfig
from vlarft.agents.networks.consistency import karras_sigmas, sample_actions


def bc_weight(sigma, cfg: ConsistencyConfig):
    """w(sigma) = sigma^-2 + 1 / sigma_data^2 (Karras SNR weighting of the reconstruction loss)."""
    return sigma ** -2 + 1.0 / cfg.sigma_data ** 2


def consistency_bc_loss(head_apply: Callable, head_params, embedding, state, actions, rng,
                        cfg: ConsistencyConfig, row_weights=None) -> tuple[jax.Array, dict]:
    """L_BC = mean_b w(sigma_i) mean_d (f(a + sigma_i z, sigma_i | s) - a)^2, i ~ U{0..M-2} per element.

    `row_weights` [B] (optional) turn both means over b into weighted means.
    Returns (loss, {"bc_loss", "bc_mse"}); bc_mse is the unweighted squared error.
    """
    sigmas = jnp.asarray(karras_sigmas(cfg))
    k_index, k_noise = jax.random.split(rng)
    index = jax.random.randint(k_index, actions.shape[:-1], 0, cfg.num_scales - 1)
    sigma = sigmas[index]
    noisy = actions + sigma[..., None] * jax.random.normal(k_noise, actions.shape, actions.dtype)
    denoised = head_apply({"params": head_params}, noisy, sigma, embedding, state)
    mse = jnp.mean((denoised - actions) ** 2, axis=-1)
    rows = jnp.ones_like(mse) if row_weights is None else jnp.asarray(row_weights, mse.dtype)
    mean = lambda x: jnp.sum(rows * x) / jnp.maximum(jnp.sum(rows), 1e-6)
    loss = mean(bc_weight(sigma, cfg) * mse)
    return loss, {"bc_loss": loss, "bc_mse": mean(mse)}


def td_target(rewards, discounts, gamma: float, next_q_target):
    """y = r + gamma * discount * min_k Qbar_k(s', a'); next_q_target [K, B] -> y [B]."""
    return rewards + gamma * discounts * jnp.min(next_q_target, axis=0)


def _eligible(num: int, bound_mask):
    return jnp.ones((num,), bool) if bound_mask is None else jnp.asarray(bound_mask, bool)


def calql_bound(q_samples, mc_returns, bound_mask=None):
    """(bounded [K, B, S], raised bool [K, B, S]): samples below their state's MC return raised to it.

    Only columns where `bound_mask` [S] is True are eligible (None = all); mc_returns [B].
    """
    eligible = _eligible(q_samples.shape[-1], bound_mask)
    lower = jax.lax.stop_gradient(mc_returns)[None, :, None]
    raised = (q_samples < lower) & eligible
    return jnp.where(raised, lower, q_samples), raised


def log_mean_exp(values, temp: float):
    """T logsumexp(values / T) - T ln(n) over the last axis (n values): a soft maximum."""
    return temp * jax.nn.logsumexp(values / temp, axis=-1) - temp * math.log(values.shape[-1])


def calql_conservative(q_samples, q_data, mc_returns, temp: float, bound_mask=None) -> tuple[jax.Array, jax.Array]:
    """Cal-QL conservative term and bound rate.

    q_samples [K, B, S] (Q(s, .) of sampled actions), q_data [K, B] (Q(s, a)), mc_returns [B].
    The samples are bounded by `calql_bound`; with the S + 1 values Q_all = [bounded, q_data]:
    ood = log_mean_exp(Q_all, T), term = mean_{K,B}(ood - q_data).
    bound_rate = raised entries / bound-eligible entries.
    """
    bounded, raised = calql_bound(q_samples, mc_returns, bound_mask)
    eligible = jnp.sum(_eligible(q_samples.shape[-1], bound_mask)) * q_samples.shape[0] * q_samples.shape[1]
    bound_rate = jnp.sum(raised) / jnp.maximum(eligible, 1)
    ood = log_mean_exp(jnp.concatenate([bounded, q_data[..., None]], axis=-1), temp)
    return jnp.mean(ood - q_data), bound_rate


def critic_loss(critic_apply: Callable, critic_params, target_critic_params, head_apply: Callable, head_params,
                batch: dict, rng, loss_cfg: LossConfig, head_cfg: ConsistencyConfig) -> tuple[jax.Array, dict]:
    """L_critic = L_TD + cql_alpha * conservative (Cal-QL); differentiate w.r.t. `critic_params`.

    TD target from the target critic at (s', a'), a' a one-step actor sample (no gradient).
    When cql_alpha > 0: cql_n_actions uniform, current-policy (at s) and next-policy (at s')
    actions per state, all scored as Q(s, .) together with the data action in one critic call.
    Metrics: critic_loss, td_loss, q_data, q_target; with the conservative term also cql_term,
    bound_rate, q_random, q_current, q_next.
    """
    obs, next_obs, actions = batch["observations"], batch["next_observations"], batch["actions"]
    batch_size, action_dim = actions.shape
    head_params = jax.lax.stop_gradient(head_params)
    k_next, k_target, k_random, k_current, k_next_policy, k_q = jax.random.split(rng, 6)

    def policy(observation, key, repeat=None):
        return sample_actions(head_apply, head_params, observation["embedding"], observation["state"], key,
                              head_cfg, action_dim, repeat=repeat)

    def q_online(acts, key):
        return critic_apply({"params": critic_params}, obs, acts, train=True, rngs={"dropout": key})

    next_q = critic_apply({"params": target_critic_params}, next_obs, policy(next_obs, k_next), train=True,
                          rngs={"dropout": k_target})
    target = jax.lax.stop_gradient(td_target(batch["rewards"], batch["discounts"], loss_cfg.discount, next_q))
    metrics = {"q_target": jnp.mean(target)}

    if loss_cfg.cql_alpha > 0:
        n = loss_cfg.cql_n_actions
        sampled = [jax.random.uniform(k_random, (batch_size, n, action_dim), minval=-1.0, maxval=1.0),
                   policy(obs, k_current, n), policy(next_obs, k_next_policy, n)]
        q_all = q_online(jnp.concatenate(sampled + [actions[:, None]], axis=1), k_q)  # [K, B, 3n + 1]
        q_data, q_samples = q_all[..., -1], q_all[..., :-1]
        bound_mask = np.array([loss_cfg.calql_bound_random] * n + [True] * (2 * n))
        conservative, bound_rate = calql_conservative(q_samples, q_data, batch["mc_returns"], loss_cfg.cql_temp,
                                                      bound_mask)
        metrics.update(cql_term=conservative, bound_rate=bound_rate, q_random=jnp.mean(q_samples[..., :n]),
                       q_current=jnp.mean(q_samples[..., n:2 * n]), q_next=jnp.mean(q_samples[..., 2 * n:]))
    else:
        q_data, conservative = q_online(actions, k_q), 0.0

    td = jnp.mean((q_data - target[None]) ** 2)
    loss = td + loss_cfg.cql_alpha * conservative
    metrics.update(critic_loss=loss, td_loss=td, q_data=jnp.mean(q_data))
    return loss, metrics


def q_scale(q: jax.Array, kind: str) -> jax.Array:
    """The scale the AWR temperature is relative to: the std of the batch's Q values (shift
    invariant: it does not vanish when Q crosses zero), or their mean |Q|."""
    if kind == "std":
        return jnp.std(q) + 1e-6
    assert kind == "mean_abs", kind  # LossConfig validates it
    return jnp.mean(jnp.abs(q)) + 1e-6


def advantage_weights(critic_apply: Callable, critic_params, head_apply: Callable, head_params, batch: dict, rng,
                      loss_cfg: LossConfig, head_cfg: ConsistencyConfig) -> tuple[jax.Array, dict]:
    """Advantage-weighted BC row weights (AWR/AWAC): w = min(exp(A / (T scale)), w_max), with
    A = Q(s, a) - Q(s, a_pi) (ensemble means, a_pi a one-step policy sample; no gradient) and
    T = `awr_temperature` relative to a scale of the batch's Q values (`awr_scale`: their std, or
    their mean |Q|), so it does not depend on the reward scale. Imitation then favours the data
    actions the critic ranks above the policy's own: the actor improves from data without
    following the critic's gradient to actions no data shows."""
    obs, actions = batch["observations"], batch["actions"]
    k_pi, k_q = jax.random.split(rng)
    params = {"params": jax.lax.stop_gradient(critic_params)}
    a_pi = sample_actions(head_apply, jax.lax.stop_gradient(head_params), obs["embedding"], obs["state"], k_pi,
                          head_cfg, actions.shape[-1])
    q = critic_apply(params, obs, jnp.stack([actions, a_pi], axis=1), train=True, rngs={"dropout": k_q})  # [K, B, 2]
    q = jnp.mean(q, axis=0)
    advantage = q[:, 0] - q[:, 1]
    scale = q_scale(q, loss_cfg.awr_scale)
    weights = jnp.minimum(jnp.exp(advantage / (loss_cfg.awr_temperature * scale)), loss_cfg.awr_max_weight)
    weights = jax.lax.stop_gradient(weights)
    return weights, {"advantage": jnp.mean(advantage), "awr_weight_mean": jnp.mean(weights),
                     "awr_weight_max": jnp.max(weights)}


def actor_terms(head_apply: Callable, head_params, critic_apply: Callable | None, critic_params, batch: dict,
                rng, loss_cfg: LossConfig, head_cfg: ConsistencyConfig) -> tuple[tuple[jax.Array, jax.Array], dict]:
    """The two weighted terms of the actor loss, (bc_weight * L_BC, q_weight * L_Q), and metrics.

    L_Q = -mean_b reduce_k Q_k(s, a_pi) (reduce = `actor_q_reduction`), a_pi a one-step sample
    with gradient through the head (bounded by `bound_actions`); the critic is frozen
    (stop_gradient). With `q_normalize`, L_Q is divided by stop_gradient(mean_b |reduce_k Q|)
    (TD3+BC), so eta sets the BC:Q trade-off whatever the reward scale. With q_weight == 0 (SFT)
    the critic is not evaluated (critic_apply and critic_params may be None).
    With `awr_temperature` > 0 the BC rows are also weighted by `advantage_weights`.
    Metrics: bc_loss, bc_mse, and with a Q term q_loss, q_pi, q_scale, saturation (share of
    sampled action entries at the box, |a| >= 0.999) and saturation_max_dim (the most
    saturated dimension's share); with advantage weights advantage, awr_weight_mean/max.
    """
    obs, actions = batch["observations"], batch["actions"]
    k_bc, k_pi, k_q, k_awr = jax.random.split(rng, 4)
    rows, metrics = batch.get("bc_row_weights"), {}
    if loss_cfg.awr_temperature > 0:
        weights, metrics = advantage_weights(critic_apply, critic_params, head_apply, head_params, batch, k_awr,
                                             loss_cfg, head_cfg)
        rows = weights if rows is None else rows * weights
    bc, bc_metrics = consistency_bc_loss(head_apply, head_params, obs["embedding"], obs["state"], actions, k_bc,
                                         head_cfg, rows)
    metrics.update(bc_metrics)
    q_term = jnp.zeros((), bc.dtype)
    if loss_cfg.q_weight != 0:
        a_pi = sample_actions(head_apply, head_params, obs["embedding"], obs["state"], k_pi, head_cfg,
                              actions.shape[-1])
        q = critic_apply({"params": jax.lax.stop_gradient(critic_params)}, obs, a_pi, train=True,
                         rngs={"dropout": k_q})
        q = jnp.min(q, axis=0) if loss_cfg.actor_q_reduction == "min" else jnp.mean(q, axis=0)
        scale = jax.lax.stop_gradient(jnp.mean(jnp.abs(q))) + 1e-6 if loss_cfg.q_normalize else 1.0
        q_pi = jnp.mean(q)
        q_term = -q_pi / scale
        at_bound = jax.lax.stop_gradient(jnp.abs(a_pi) >= 0.999)
        metrics.update(q_loss=q_term, q_pi=q_pi, q_scale=jnp.asarray(scale, jnp.float32),
                       saturation=jnp.mean(at_bound), saturation_max_dim=jnp.max(jnp.mean(at_bound, axis=0)))
    return (loss_cfg.bc_weight * bc, loss_cfg.q_weight * q_term), metrics


def actor_loss(head_apply: Callable, head_params, critic_apply: Callable | None, critic_params, batch: dict,
               rng, loss_cfg: LossConfig, head_cfg: ConsistencyConfig) -> tuple[jax.Array, dict]:
    """L_pi = bc_weight * L_BC + q_weight * L_Q (`actor_terms`); w.r.t. `head_params`.
    Metrics: those of `actor_terms` and actor_loss."""
    (bc_term, q_term), metrics = actor_terms(head_apply, head_params, critic_apply, critic_params, batch, rng,
                                             loss_cfg, head_cfg)
    loss = bc_term + q_term
    metrics["actor_loss"] = loss
    return loss, metrics

"""Consistency-policy action head (EDM/Karras parameterisation) and its samplers.

f(x, sigma | obs) = c_skip(sigma) x + c_out(sigma) F([c_in(sigma) x, TimeMLP(t), obs_enc])
with t = 250 ln(sigma) and obs_enc = [embedding, proprio_proj(state)]. f(x, sigma_min) = x exactly:
the boundary condition of consistency models. How f is kept in the action box [-1, 1] is
`ConsistencyConfig.action_bound` (`bound_actions`): "clip" clips every output of the network (the
reference code: no gradient through a saturated dimension), "straight_through" leaves the
network's output unbounded (the BC loss reads it) and clips sampled actions with an identity
gradient.

Calling convention used by the samplers and `vlarft.agents.losses`: `apply_fn` is
`ConsistencyHead(...).apply` (or anything with its signature) and `params` is the `params`
collection, i.e. the head is evaluated as `apply_fn({"params": params}, x, sigma, embedding, state)`.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vlarft.agents.config import ConsistencyConfig
from vlarft.agents.networks.common import MLP, ProprioProjection, broadcast_features, dense


def karras_sigmas(cfg: ConsistencyConfig) -> np.ndarray:
    """The M Karras noise levels, DESCENDING: sigma_0 = sigma_max, sigma_{M-1} = sigma_min (float32)."""
    inv_rho = 1.0 / cfg.rho
    ramp = np.arange(cfg.num_scales, dtype=np.float64) / (cfg.num_scales - 1)
    hi, lo = cfg.sigma_max ** inv_rho, cfg.sigma_min ** inv_rho
    sigmas = (hi + ramp * (lo - hi)) ** cfg.rho
    sigmas[0], sigmas[-1] = cfg.sigma_max, cfg.sigma_min  # exact endpoints (boundary condition)
    return sigmas.astype(np.float32)


def scalings(sigma, cfg: ConsistencyConfig):
    """(c_skip, c_out, c_in) of the consistency parameterisation at noise level `sigma`."""
    sd, smin = cfg.sigma_data, cfg.sigma_min
    c_skip = sd ** 2 / ((sigma - smin) ** 2 + sd ** 2)
    c_out = (sigma - smin) * sd / jnp.sqrt(sigma ** 2 + sd ** 2)
    c_in = 1.0 / jnp.sqrt(sigma ** 2 + sd ** 2)
    return c_skip, c_out, c_in


def time_features(sigma):
    """The scalar time fed to the time embedding: 1000 * 0.25 * ln(sigma + 1e-44)."""
    return 1000.0 * 0.25 * jnp.log(sigma + 1e-44)


def sinusoidal_embedding(t, dim: int):
    """[..., dim] sin || cos embedding of t with frequencies exp(-k ln(1e4) / (dim/2 - 1))."""
    half = dim // 2
    freqs = jnp.exp(-jnp.arange(half, dtype=jnp.float32) * (math.log(10000.0) / (half - 1)))
    angles = t[..., None] * freqs
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


class TimeMLP(nn.Module):
    """Sinusoidal embedding of t -> Dense(2 time_dim) -> tanh -> Dense(time_dim)."""

    time_dim: int

    @nn.compact
    def __call__(self, t):
        x = sinusoidal_embedding(t, self.time_dim)
        return dense(self.time_dim)(jnp.tanh(dense(2 * self.time_dim)(x)))


class ConsistencyHead(nn.Module):
    """The consistency function f(x, sigma | embedding, state) -> action.

    Shapes: x [*lead, A]; sigma scalar or [*lead]; embedding [*obs_lead, E] and state
    [*obs_lead, S] where obs_lead is a prefix of lead (e.g. obs [B, .] with x [B, n, A]: the
    observation encoding is computed once and broadcast over the n samples).
    """

    config: ConsistencyConfig
    action_dim: int

    @nn.compact
    def __call__(self, x, sigma, embedding, state):
        cfg = self.config
        lead = x.shape[:-1]
        sigma = jnp.broadcast_to(jnp.asarray(sigma, x.dtype), lead)
        obs = jnp.concatenate([embedding, ProprioProjection(cfg.proprio_dim, name="proprio")(state)], -1)
        c_skip, c_out, c_in = (c[..., None] for c in scalings(sigma, cfg))
        features = jnp.concatenate([
            c_in * x,
            TimeMLP(cfg.time_dim, name="time")(time_features(sigma)),
            broadcast_features(obs, lead),
        ], axis=-1)
        out = dense(self.action_dim, name="out")(MLP(cfg.hidden, name="mlp")(features))
        denoised = c_skip * x + c_out * out
        return jnp.clip(denoised, -1.0, 1.0) if cfg.action_bound == "clip" else denoised


ACTION_BOUNDS = ("clip", "straight_through")


def bound_actions(actions, cfg: ConsistencyConfig):
    """Actions in [-1, 1]. "clip": the head already clipped them (returned as they are);
    "straight_through": clipped, with the gradient of the identity (a saturated dimension still
    learns)."""
    if cfg.action_bound not in ACTION_BOUNDS:
        raise ValueError(f"unknown action_bound {cfg.action_bound!r}; known: {ACTION_BOUNDS}")
    if cfg.action_bound == "clip":
        return actions
    return actions + jax.lax.stop_gradient(jnp.clip(actions, -1.0, 1.0) - actions)


def multistep_sigmas(cfg: ConsistencyConfig, steps: int) -> np.ndarray:
    """The steps-1 re-noising levels of a k-step sample: Karras levels evenly spaced by index."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    indices = np.round(np.linspace(0, cfg.num_scales - 1, steps + 1))[1:steps].astype(int)
    return karras_sigmas(cfg)[indices]


def sample_actions(apply_fn: Callable, params, embedding, state, rng, cfg: ConsistencyConfig,
                   action_dim: int, *, steps: int = 1, deterministic: bool = False,
                   repeat: int | None = None, sigmas: Sequence[float] | None = None, bounded: bool = True):
    """Actions of the consistency policy: [B, A], or [B, repeat, A] when `repeat` is given.

    One step: a = f(sigma_max z, sigma_max | obs), z ~ N(0, I). With `steps` = k > 1 (CM
    multistep sampling) the action is re-noised to each level of `sigmas` in turn (default:
    `multistep_sigmas(cfg, k)`) as a + sqrt(sigma^2 - sigma_min^2) z and denoised again.
    `deterministic` draws all noise from `cfg.eval_noise_seed` instead of `rng` (which may then be
    None), so evaluation gives the same actions for the same observations on every call.
    Every intermediate sample is bounded (`bound_actions`); the returned one too unless
    `bounded=False` (the head's raw output, for saturation statistics).
    Differentiable w.r.t. `params` (the actor loss back-propagates through it); jit-able with
    `steps`, `deterministic`, `repeat` static.
    """
    batch = embedding.shape[:-1]
    shape = batch + ((repeat,) if repeat is not None else ()) + (action_dim,)
    if sigmas is None:
        sigmas = multistep_sigmas(cfg, steps)
    key = jax.random.PRNGKey(cfg.eval_noise_seed) if deterministic else rng
    keys = jax.random.split(key, len(sigmas) + 1)

    def denoise(x, sigma):
        return apply_fn({"params": params}, x, sigma, embedding, state)

    x = cfg.sigma_max * jax.random.normal(keys[0], shape, jnp.float32)
    actions = denoise(x, cfg.sigma_max)
    for key, sigma in zip(keys[1:], sigmas):
        sigma = float(sigma)
        noise = math.sqrt(max(sigma ** 2 - cfg.sigma_min ** 2, 0.0))
        actions = denoise(bound_actions(actions, cfg) + noise * jax.random.normal(key, shape, jnp.float32), sigma)
    return bound_actions(actions, cfg) if bounded else actions

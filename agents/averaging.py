"""The acting policy as a running (exponential) average of the trained parameters.

A policy fitted to a few demonstrations succeeds or fails in closed loop on small parameter
changes: at a constant learning rate, checkpoints 500 steps apart of one SFT run act at 22%, 68%
and 20% on the same evaluation seeds (WORKSPACE.md, "Making fine-tuning reliable"). The average
of the recent parameters moves less than any one of them. Where the parameters start random
(SFT's head, RLPD's fresh actor) the decay is warmed up, min(decay, (1 + t) / (10 + t)) at
update t (0-based), so the average forgets the initialisation instead of keeping decay^t of it
(0.999^1500 = 22%); where a stage starts from a trained policy it is not, so the average starts
at that policy (`TrainConfig.policy_ema_warmup`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def warmed_up_decay(step: jax.Array, decay: float) -> jax.Array:
    """The average's decay at update `step` (0-based): (1 + t) / (10 + t), capped at `decay`."""
    t = jnp.asarray(step, jnp.float32)
    return jnp.minimum(decay, (1.0 + t) / (10.0 + t))


def warms_up(setting: bool | None, starts_trained: bool) -> bool:
    """`TrainConfig.policy_ema_warmup` for a learner: None = warm up only when the acting
    parameters start untrained."""
    return not starts_trained if setting is None else setting


def updated_average(average, params, step: jax.Array, decay: float, warm_up: bool = True):
    """The running average after update `step` made `params`; `params` itself when decay is 0.
    `warm_up` False: the full decay from the first update (the average starts where the
    parameters started and remembers it as decay^t)."""
    if not decay:
        return params
    rate = 1.0 - (warmed_up_decay(step, decay) if warm_up else decay)
    # average + rate (params - average): exactly the average while the parameters equal it (a
    # critic-only update leaves the acting policy bit-identical)
    return jax.tree_util.tree_map(lambda a, p: a + rate * (p - a), average, params)

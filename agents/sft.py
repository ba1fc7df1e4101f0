"""Supervised fine-tuning (the paper's SFT baseline): backbone + consistency head trained by
behaviour cloning (the consistency reconstruction loss) on demonstration windows.

This is also how a backbone without pretrained weights becomes task-aware before the offline
stage freezes it and caches its embeddings.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

import flax
import jax
import jax.numpy as jnp
import optax

from vlarft.agents import losses
from vlarft.agents.averaging import updated_average, warms_up
from vlarft.agents.config import AgentConfig
from vlarft.agents.networks import ConsistencyHead, make_backbone, sample_actions


@flax.struct.dataclass
class SFTState:
    step: jax.Array
    params: Any  # {"backbone": ..., "head": ...}
    policy_params: Any  # what acts, is evaluated and exported: the running average of params (train.policy_ema)
    opt: Any
    rng: jax.Array


class SFTLearner:
    """Behaviour cloning of backbone + head on `StepData` batches."""

    def __init__(self, config: AgentConfig, action_dim: int, cameras: tuple[str, ...], state_dim: int):
        self.config, self.action_dim = config, action_dim
        self.backbone = make_backbone(config.backbone, tuple(cameras), state_dim)
        self.head = ConsistencyHead(config.head, action_dim)
        self.tx = optax.adam(config.train.learning_rate)
        self.average_warms_up = warms_up(config.train.policy_ema_warmup, starts_trained=False)  # a fresh head
        self._update = jax.jit(self._update_fn)
        self.embed = jax.jit(functools.partial(embed, self.backbone))
        self._eval_actions = jax.jit(self._eval_actions_fn)

    def init(self, rng: jax.Array, batch: Mapping) -> SFTState:
        k_backbone, k_head, rng = jax.random.split(rng, 3)
        backbone_params = self.backbone.init(k_backbone, *backbone_inputs(batch), **_language(batch))["params"]
        embedding = embed(self.backbone, backbone_params, batch)
        head_params = self.head.init(k_head, batch["action"], self.config.head.sigma_max, embedding,
                                     batch["state"][:, -1])["params"]
        params = {"backbone": backbone_params, "head": head_params}
        return SFTState(step=jnp.zeros((), jnp.int32), params=params, policy_params=params, opt=self.tx.init(params),
                        rng=rng)

    def step(self, state: SFTState, batch: Mapping) -> tuple[SFTState, dict]:
        return self._update(state, batch)

    def _loss(self, params, batch, rng):
        k_dropout, k_bc = jax.random.split(rng)
        embedding = self.backbone.apply({"params": params["backbone"]}, *backbone_inputs(batch), train=True,
                                        rngs={"dropout": k_dropout}, **_language(batch))
        loss, metrics = losses.consistency_bc_loss(self.head.apply, params["head"], embedding, batch["state"][:, -1],
                                                   batch["action"], k_bc, self.config.head)
        return loss, metrics

    def _update_fn(self, state: SFTState, batch: Mapping) -> tuple[SFTState, dict]:
        rng, key = jax.random.split(state.rng)
        grads, metrics = jax.grad(self._loss, has_aux=True)(state.params, batch, key)
        updates, opt = self.tx.update(grads, state.opt, state.params)
        params = optax.apply_updates(state.params, updates)
        policy = updated_average(state.policy_params, params, state.step, self.config.train.policy_ema,
                                 self.average_warms_up)
        return state.replace(step=state.step + 1, params=params, policy_params=policy, opt=opt, rng=rng), metrics

    def _eval_actions_fn(self, params, batch):
        embedding = embed(self.backbone, params["backbone"], batch)
        return sample_actions(self.head.apply, params["head"], embedding, batch["state"][:, -1], None,
                              self.config.head, self.action_dim, deterministic=True)

    def bc_error(self, state: SFTState, batch: Mapping) -> float:
        """Mean squared error of the acting policy's deterministic one-step action against the batch's."""
        return float(jnp.mean((self._eval_actions(state.policy_params, batch) - batch["action"]) ** 2))


def backbone_inputs(batch: Mapping) -> tuple:
    return batch["images"], batch["state"], batch["text_ids"], batch["text_mask"], batch["timestep_mask"]


def _language(batch: Mapping) -> dict:
    """The precomputed instruction embedding, when the data has one."""
    return {"language_embedding": batch["language_embedding"]} if "language_embedding" in batch else {}


def embed(backbone, backbone_params, batch: Mapping):
    """The frozen backbone's readout embedding of a window batch."""
    return backbone.apply({"params": backbone_params}, *backbone_inputs(batch), **_language(batch))

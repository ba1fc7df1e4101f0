"""RLPD / HIL-SERL baseline: SAC with a tanh-Gaussian actor, an auto-tuned entropy temperature
and the critic ensemble, on 50/50 demo/online batches at the run's update-to-data ratio.

As HIL-SERL there is no offline stage: the online stage starts from an SFT workdir, whose
backbone made the dataset's cached embeddings and embeds the live frames the actor stores, with a
fresh actor and critic. The actor reads what the critic reads (`CriticConfig.input`): the
cached embedding + proprio ("embedding" variant) or its own pixel encoders + proprio ("pixels",
HIL-SERL's ResNet encoders). A learner step is `critic_actor_ratio` updates: critic-only ones,
then one critic + actor + temperature update (`Learner._step`).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vlarft.agents import sac_losses
from vlarft.agents.actor import ConRFTPolicy
from vlarft.agents.builder import ConRFTBuilder
from vlarft.agents.learner import Learner, LearnerState, loss_batch
from vlarft.agents.networks import random_crop_observation
from vlarft.agents.networks.gaussian import GaussianActor, gaussian_actions


@flax.struct.dataclass
class RLPDState(LearnerState):
    """`LearnerState` with the SAC actor as `head_params`/`policy_params`, plus the temperature."""

    log_alpha: jax.Array
    alpha_opt: Any


class RLPDLearner(Learner):
    """SAC updates; the acting parameters it publishes are the Gaussian actor's."""

    starts_from_trained_policy = False  # a fresh actor: its average forgets the initialisation

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.head = GaussianActor(self.config.sac, self.config.critic, tuple(self.critic.cameras), self.action_dim)
        self.alpha_tx = optax.adam(self.config.train.learning_rate)
        self.target_entropy = self.config.sac.target_entropy or -float(self.action_dim)
        self._eval_actions = jax.jit(lambda params, observation: gaussian_actions(
            self.head.apply, params, observation, None, deterministic=True))

    def init(self, rng: jax.Array, item: Mapping) -> RLPDState:
        obs, actions = (lambda b: (b["observations"], b["actions"]))(loss_batch(item, self.state_mean, self.state_std))
        k_actor, k_critic, rng = jax.random.split(rng, 3)
        actor_params = self.head.init(k_actor, obs)["params"]
        critic_params = self.critic.init(k_critic, obs, actions)["params"]
        log_alpha = jnp.asarray(math.log(self.config.sac.init_temperature), jnp.float32)
        return RLPDState(step=jnp.zeros((), jnp.int32), head_params=actor_params, policy_params=actor_params,
                         critic_params=critic_params, target_critic_params=critic_params,
                         head_opt=self.head_tx.init(actor_params), critic_opt=self.critic_tx.init(critic_params),
                         rng=rng, log_alpha=log_alpha, alpha_opt=self.alpha_tx.init(log_alpha))

    def reset_optimizers(self, state: RLPDState) -> RLPDState:
        return super().reset_optimizers(state).replace(alpha_opt=self.alpha_tx.init(state.log_alpha))

    def step(self, state, item, update_actor: bool = True):
        state, metrics = super().step(state, item, update_actor)
        return state, {k: v for k, v in metrics.items() if k not in ("bc_weight", "q_weight", "cql_alpha")}

    def _update(self, state: RLPDState, item: Mapping, update_actor: bool) -> tuple[RLPDState, dict]:
        batch = loss_batch(item, self.state_mean, self.state_std, returns=self.config.returns)
        rng, k_crop, k_critic, k_actor = jax.random.split(state.rng, 4)
        if self.config.critic.input == "pixels":
            k_obs, k_next = jax.random.split(k_crop)
            pad = self.config.critic.crop_pad
            batch = dict(batch, observations=random_crop_observation(batch["observations"], k_obs, pad),
                         next_observations=random_crop_observation(batch["next_observations"], k_next, pad))
        alpha = jnp.exp(state.log_alpha)
        critic_grad, metrics = jax.grad(sac_losses.sac_critic_loss, argnums=1, has_aux=True)(
            self.critic.apply, state.critic_params, state.target_critic_params, self.head.apply, state.head_params,
            alpha, batch, k_critic, self.loss.discount, self.config.sac.entropy_backup)
        updates, critic_opt = self.critic_tx.update(critic_grad, state.critic_opt, state.critic_params)
        critic_params = optax.apply_updates(state.critic_params, updates)
        new = dict(critic_params=critic_params, critic_opt=critic_opt, rng=rng,
                   target_critic_params=optax.incremental_update(critic_params, state.target_critic_params,
                                                                  self.loss.tau))
        if update_actor:
            actor_grad, actor_metrics = jax.grad(sac_losses.sac_actor_loss, has_aux=True)(
                state.head_params, self.head.apply, self.critic.apply, critic_params, alpha, batch, k_actor)
            updates, head_opt = self.head_tx.update(actor_grad, state.head_opt, state.head_params)
            alpha_grad = jax.grad(sac_losses.temperature_loss)(state.log_alpha, actor_metrics["entropy"],
                                                               self.target_entropy)
            alpha_updates, alpha_opt = self.alpha_tx.update(alpha_grad, state.alpha_opt, state.log_alpha)
            new.update(head_params=optax.apply_updates(state.head_params, updates), head_opt=head_opt,
                       log_alpha=optax.apply_updates(state.log_alpha, alpha_updates), alpha_opt=alpha_opt)
            metrics = {**metrics, **actor_metrics}
        return state.replace(**new), {**metrics, "alpha": alpha}

    def eval_actions(self, head_params, embedding, raw_state) -> np.ndarray:
        """Deterministic actions (tanh of the mean) of the embedding variant for raw proprio states."""
        state = (jnp.asarray(raw_state) - self.state_mean) / self.state_std
        return np.asarray(self._eval_actions(head_params, {"embedding": jnp.asarray(embedding), "state": state}))


class RLPDBuilder(ConRFTBuilder):
    """Registered as "rlpd": SFT backbone for the embeddings, fresh SAC actor and critic."""

    init_stages = ("sft",)
    runs_gate = False
    learner_class = RLPDLearner

    def _actor(self) -> GaussianActor:
        return GaussianActor(self.config.sac, self.config.critic, tuple(self.spec.cameras), self.spec.action_dim)

    def acting_template(self):
        """The Gaussian actor's parameters, shaped after one blank observation (seeded)."""
        blank = {"embedding": jnp.zeros((1, self.spec.embedding_dim)), "state": jnp.zeros((1, self.spec.state_dim))}
        if self.config.critic.input == "pixels":
            blank.update({f"image_{c}": jnp.zeros((1, h, w, 3), jnp.uint8) for c, (h, w) in self.spec.cameras.items()})
        return self._actor().init(jax.random.PRNGKey(self.config.train.seed), blank)["params"]

    def make_policy(self, head_params=None, *, deterministic: bool = True, seed: int = 0):
        """The export's backbone (embeddings) with the Gaussian actor (`head_params`, default the template)."""
        return gaussian_policy(self.export, self.config, self.acting_template() if head_params is None else head_params,
                               deterministic=deterministic, seed=seed)

    @classmethod
    def policy_from_export(cls, export, *, deterministic: bool = True, steps: int = 1, seed: int = 0):
        """An RLPD online export: its head file holds the Gaussian actor (`steps` has no meaning)."""
        return gaussian_policy(export, export.config, export.head_params, deterministic=deterministic, seed=seed)

    def starting_state(self, learner, fresh, init_from: str):
        """A fresh actor, critic and temperature (no offline stage)."""
        return fresh


def gaussian_policy(export, config, actor_params, *, deterministic: bool, seed: int):
    """`export`'s backbone (embeddings, normaliser, instruction) acting through the tanh-Gaussian
    actor of `config` (`config.sac`, `config.critic.input`) with `actor_params`."""
    apply = GaussianActor(config.sac, config.critic, export.cameras, export.meta["action_dim"]).apply
    return ConRFTPolicy(export.config, export.backbone_params, actor_params, cameras=export.cameras,
                        state_dim=export.meta["state_dim"], action_dim=export.meta["action_dim"],
                        normalizer=export.normalizer, instruction=export.meta["instruction"],
                        deterministic=deterministic, seed=seed,
                        language_embedding=export.meta.get("language_embedding"),
                        action_head=lambda params, observation, key: gaussian_actions(
                            apply, params, observation, key, deterministic))

"""HG-DAgger baseline: the online loop with the human intervening, the policy trained only by
imitation of the demonstrations and the human's intervention steps; no critic.

The policy is the SFT export's backbone + consistency head; the learner takes the consistency-BC
loss on the rows of the demo table (demonstrations, and the interventions the actor's writer
routes there, `route_by_intervention`) and on the online table's intervention rows. The batches
are sampled and paced like ConRFT's (same tables, mix and update-to-data ratio), so the two
differ only in the loss. The critic in the state is never trained.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import optax

from vlarft.agents import losses
from vlarft.agents.builder import ConRFTBuilder
from vlarft.agents.learner import Learner, LearnerState, loss_batch


def human_rows(item: Mapping, online_source: int | None):
    """1.0 for rows the human made (demo-table rows, intervention rows), else 0.0: the BC row weights."""
    human = item["intervention"].astype(bool)
    if online_source is not None and "source" in item:
        human = human | (item["source"] != online_source)
    else:
        human = jnp.ones_like(human)
    return human.astype(jnp.float32)


class BCLearner(Learner):
    """Consistency BC on human rows only: every batch of a learner step is one head update."""

    def _update(self, state: LearnerState, item: Mapping, update_actor: bool) -> tuple[LearnerState, dict]:
        del update_actor  # no critic to warm up: every update trains the policy
        batch = loss_batch(item, self.state_mean, self.state_std)
        rows = human_rows(item, self.online_source)
        rng, key = jax.random.split(state.rng)
        obs = batch["observations"]

        def bc(head_params):
            return losses.consistency_bc_loss(self.head.apply, head_params, obs["embedding"], obs["state"],
                                              batch["actions"], key, self.config.head, rows)

        (loss, metrics), grad = jax.value_and_grad(bc, has_aux=True)(state.head_params)
        updates, head_opt = self.head_tx.update(grad, state.head_opt, state.head_params)
        head_params = optax.apply_updates(state.head_params, updates)
        metrics = {**metrics, "actor_loss": loss, "human_rows": jnp.mean(rows)}
        return state.replace(head_params=head_params, head_opt=head_opt, rng=rng), metrics


class HGDAggerBuilder(ConRFTBuilder):
    """Registered as "hg_dagger": starts from the SFT policy, trains it by `BCLearner`."""

    init_stages = ("sft",)
    runs_gate = False
    learner_class = BCLearner

    def starting_state(self, learner, fresh, init_from: str):
        """The SFT head (and a fresh, unused critic)."""
        return learner.with_head(fresh, self.export.head_params)

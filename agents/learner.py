"""The ConRFT learner: consistency head (actor) + critic ensemble with a target network.

One learner step = `critic_actor_ratio` updates on fresh batches: critic-only updates first, then
one joint critic + actor update (the reference's cta_ratio = 2). The step's batches arrive as one
item of `critic_actor_ratio` x batch_size rows (`ConRFTBuilder.make_iterator`), so a step is one
host->device transfer and one jitted call; `Learner.steps` runs k steps per call (`lax.scan` over
one item of k steps' rows, `OnlineConfig.steps_per_dispatch`). Losses come from `agents/losses.py` (Cal-QL critic when `cql_alpha > 0`, TD otherwise;
actor = beta BC + eta (-Q)). The actor reads cached backbone embeddings + proprio, so a learner
step never runs the backbone.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vlarft.agents import losses
from vlarft.agents.averaging import updated_average, warms_up
from vlarft.agents.config import AgentConfig, LossConfig, ReturnConfig
from vlarft.agents.networks import ConsistencyHead, Critic, random_crop_observation, sample_actions


@flax.struct.dataclass
class LearnerState:
    """Everything an exact resume needs."""

    step: jax.Array  # learner steps done
    head_params: Any  # the trained actor head
    policy_params: Any  # the head that acts, is evaluated and exported (EMA of head_params, TrainConfig.policy_ema)
    critic_params: Any
    target_critic_params: Any
    head_opt: Any
    critic_opt: Any
    rng: jax.Array


def loss_batch(item: Mapping, state_mean, state_std, online_source: int | None = None,
               online_bc_weight: float = 1.0, returns: ReturnConfig = ReturnConfig(),
               intervention_bc_weight: float = 1.0) -> dict:
    """A replay batch (`datasets/replay` item layout) -> the layout `agents/losses.py` reads,
    with proprio z-scored by the dataset statistics and rewards shaped as the Monte-Carlo returns
    stored with the items were (`returns`: r * reward_scale + reward_bias), so the TD target and
    the Cal-QL bound live on one scale. With `online_source` (the `source` index of the online
    table) and `online_bc_weight` != 1, `bc_row_weights` weighs the BC term of online rows that
    are not human interventions; with `intervention_bc_weight` != 1, that of human-intervention
    rows (from either table)."""

    def observation(obs):
        out = dict(obs)
        out["state"] = (obs["state"] - state_mean) / state_std
        return out

    batch = {
        "observations": observation(item["observation"]),
        "next_observations": observation(item["next_observation"]),
        "actions": item["action"],
        "rewards": item["reward"] * returns.reward_scale + returns.reward_bias,
        "discounts": item["discount"],
        "mc_returns": item["mc_return"],
    }
    if online_bc_weight == 1.0 and intervention_bc_weight == 1.0:
        return batch
    weights = jnp.ones_like(batch["rewards"])
    human = item["intervention"].astype(bool)
    if online_source is not None and "source" in item:
        weights = jnp.where((item["source"] == online_source) & ~human, online_bc_weight, weights)
    batch["bc_row_weights"] = jnp.where(human, intervention_bc_weight, weights)
    return batch


def split_rows(item: Mapping, parts: int, rows_per_source: tuple[int, ...]) -> list[Mapping]:
    """A learner step's item -> `parts` batches.

    The item's rows come per source table in order (`BatchIterator`): source j's block holds
    `parts` x rows_per_source[j] rows. Batch i takes the i-th slice of every block, so every
    batch keeps the table mix. Static slicing: jit-able.
    """
    if parts == 1:
        return [item]
    blocks, offset = [], 0
    for rows in rows_per_source:
        blocks.append([(offset + i * rows, offset + (i + 1) * rows) for i in range(parts)])
        offset += parts * rows

    def take(i):
        return jax.tree_util.tree_map(
            lambda x: jnp.concatenate([x[block[i][0]:block[i][1]] for block in blocks], axis=0), item)

    return [take(i) for i in range(parts)]


def stack_steps(item: Mapping, steps: int, rows_per_source: tuple[int, ...]) -> Mapping:
    """An item of `steps` learner steps' rows -> those rows stacked on a new leading axis.

    Like `split_rows` one level up: source j's block holds `steps` x rows_per_source[j] rows (the
    rows of one learner step per source, all its batches); step i takes the i-th slice of every
    block, so each step's item has the layout `split_rows` reads. Static reshapes: jit-able.
    """
    def stack(x):
        blocks, offset = [], 0
        for rows in rows_per_source:
            blocks.append(x[offset:offset + steps * rows].reshape((steps, rows) + x.shape[1:]))
            offset += steps * rows
        return jnp.concatenate(blocks, axis=1) if len(blocks) > 1 else blocks[0]

    return jax.tree_util.tree_map(stack, item)


class Learner:
    """Builds, initialises and updates a `LearnerState` for one stage's loss weights."""

    # the acting head starts as a trained policy's (SFT's, offline's), so the running average
    # starts there too (`TrainConfig.policy_ema_warmup` None); RLPD's fresh actor does not
    starts_from_trained_policy = True

    def __init__(self, config: AgentConfig, loss: LossConfig, action_dim: int, cameras: tuple[str, ...],
                 state_mean: np.ndarray, state_std: np.ndarray, online_source: int | None = None,
                 rows_per_source: tuple[int, ...] | None = None):
        if config.returns.gamma != loss.discount:
            raise ValueError(f"the Monte-Carlo returns (Cal-QL's lower bounds) use gamma {config.returns.gamma} but "
                             f"the TD target uses {loss.discount}: set returns.gamma and loss.discount alike")
        self.config, self.loss, self.action_dim = config, loss, action_dim
        # rows each source table contributes to one batch (`split_rows`); default: one table
        self.rows_per_source = tuple(rows_per_source or (config.train.batch_size,))
        self.online_source = online_source  # `source` index of online rows in replay batches (None: none)
        self.head = ConsistencyHead(config.head, action_dim)
        self.critic = Critic(config.critic, tuple(cameras))
        self.head_tx = optax.adam(config.train.learning_rate)
        self.critic_tx = optax.adam(config.train.learning_rate)
        self.state_mean = jnp.asarray(state_mean, jnp.float32)
        self.state_std = jnp.asarray(np.where(np.asarray(state_std) > 1e-6, state_std, 1.0), jnp.float32)
        self.updates_per_step = loss.critic_actor_ratio
        self.average_warms_up = warms_up(config.train.policy_ema_warmup, self.starts_from_trained_policy)
        self._steps = {update_actor: jax.jit(functools.partial(self._step, update_actor=update_actor))
                       for update_actor in (False, True)}
        self._scans = {}  # (steps, update_actor) -> jitted `_scan`
        self._eval_actions = jax.jit(lambda params, embedding, state: sample_actions(
            self.head.apply, params, embedding, state, None, config.head, action_dim, deterministic=True))

    def init(self, rng: jax.Array, item: Mapping) -> LearnerState:
        """Fresh parameters shaped after one replay item (a step's or a batch's rows)."""
        batch = loss_batch(item, self.state_mean, self.state_std)
        k_head, k_critic, rng = jax.random.split(rng, 3)
        obs = batch["observations"]
        head_params = self.head.init(k_head, batch["actions"], self.config.head.sigma_max, obs["embedding"],
                                     obs["state"])["params"]
        critic_params = self.critic.init(k_critic, obs, batch["actions"])["params"]
        return LearnerState(step=jnp.zeros((), jnp.int32), head_params=head_params, policy_params=head_params,
                            critic_params=critic_params,
                            target_critic_params=critic_params, head_opt=self.head_tx.init(head_params),
                            critic_opt=self.critic_tx.init(critic_params), rng=rng)

    def with_head(self, state: LearnerState, head_params) -> LearnerState:
        """`state` with the actor head (and the acting policy) replaced, e.g. by the SFT head, and its
        optimiser reset."""
        return state.replace(head_params=head_params, policy_params=head_params, head_opt=self.head_tx.init(head_params))

    def reset_optimizers(self, state: LearnerState) -> LearnerState:
        return state.replace(head_opt=self.head_tx.init(state.head_params),
                             critic_opt=self.critic_tx.init(state.critic_params))

    def step(self, state: LearnerState, item: Mapping, update_actor: bool = True) -> tuple[LearnerState, dict]:
        """One learner step on one replay item (`updates_per_step` batches' rows, see
        `split_rows`): (ratio - 1) critic-only updates, then one joint update (critic-only too
        when `update_actor` is False, e.g. during an online critic warm-up)."""
        state, metrics = self._steps[bool(update_actor)](state, item)
        return state, self._with_weights(metrics)

    def steps(self, state: LearnerState, item: Mapping, steps: int,
              update_actor: bool = True) -> tuple[LearnerState, dict]:
        """`steps` learner steps in one jitted call (`jax.lax.scan`), on one item holding their
        rows (`stack_steps`: per source table, `steps` x updates_per_step x rows): one dispatch and
        one host->device transfer for all. Equal to `steps` calls of `step` on the per-step items
        (to float rounding; tests/test_learner_fastpath.py). Metrics: the last step's. One step
        runs the single-step program: a scan of one pixel-critic step took 2.9x its time on XLA CPU."""
        if steps == 1:
            state, metrics = self._steps[bool(update_actor)](state, item)
            return state, self._with_weights(metrics)
        key = (int(steps), bool(update_actor))
        if key not in self._scans:
            self._scans[key] = jax.jit(functools.partial(self._scan, steps=key[0], update_actor=key[1]))
        state, metrics = self._scans[key](state, item)
        return state, self._with_weights(metrics)

    def _with_weights(self, metrics: dict) -> dict:
        """The step's metrics and the loss weights it ran with."""
        return {**metrics, "bc_weight": self.loss.bc_weight, "q_weight": self.loss.q_weight,
                "cql_alpha": self.loss.cql_alpha}

    def _scan(self, state: LearnerState, item: Mapping, steps: int, update_actor: bool) -> tuple[LearnerState, dict]:
        rows = tuple(r * self.updates_per_step for r in self.rows_per_source)
        state, metrics = jax.lax.scan(lambda s, step_item: self._step(s, step_item, update_actor), state,
                                      stack_steps(item, steps, rows))
        return state, jax.tree_util.tree_map(lambda m: m[-1], metrics)

    def _step(self, state: LearnerState, item: Mapping, update_actor: bool) -> tuple[LearnerState, dict]:
        metrics = {}
        for index, batch in enumerate(split_rows(item, self.updates_per_step, self.rows_per_source)):
            joint = update_actor and index == self.updates_per_step - 1
            state, update_metrics = self._update(state, batch, update_actor=joint)
            metrics.update(update_metrics)
        policy = updated_average(state.policy_params, state.head_params, state.step, self.config.train.policy_ema,
                                 self.average_warms_up)
        return state.replace(step=state.step + 1, policy_params=policy), metrics

    def _update(self, state: LearnerState, item: Mapping, update_actor: bool) -> tuple[LearnerState, dict]:
        batch = loss_batch(item, self.state_mean, self.state_std, self.online_source, self.loss.online_bc_weight,
                           self.config.returns, self.loss.intervention_bc_weight)
        rng, k_crop, k_critic, k_actor = jax.random.split(state.rng, 4)
        if self.config.critic.input == "pixels":
            k_obs, k_next = jax.random.split(k_crop)
            batch = dict(batch, observations=random_crop_observation(batch["observations"], k_obs, self.config.critic.crop_pad),
                         next_observations=random_crop_observation(batch["next_observations"], k_next,
                                                                   self.config.critic.crop_pad))
        critic_grad, metrics = jax.grad(losses.critic_loss, argnums=1, has_aux=True)(
            self.critic.apply, state.critic_params, state.target_critic_params, self.head.apply, state.head_params,
            batch, k_critic, self.loss, self.config.head)
        updates, critic_opt = self.critic_tx.update(critic_grad, state.critic_opt, state.critic_params)
        critic_params = optax.apply_updates(state.critic_params, updates)
        head_params, head_opt = state.head_params, state.head_opt
        if update_actor:
            head_grad, actor_metrics = self._actor_gradient(state, batch, k_actor)
            updates, head_opt = self.head_tx.update(head_grad, state.head_opt, state.head_params)
            head_params = optax.apply_updates(state.head_params, updates)
            metrics = {**metrics, **actor_metrics}
        target = optax.incremental_update(critic_params, state.target_critic_params, self.loss.tau)
        new_state = state.replace(head_params=head_params, critic_params=critic_params, target_critic_params=target,
                                  head_opt=head_opt, critic_opt=critic_opt, rng=rng)
        return new_state, metrics

    def _actor_gradient(self, state: LearnerState, batch: Mapping, rng) -> tuple[Any, dict]:
        """Gradient of the actor loss w.r.t. the head, with the norms of its BC and Q parts
        (`grad_norm_bc`, `grad_norm_q`: which term steers the policy)."""
        def terms(head_params):
            return losses.actor_terms(self.head.apply, head_params, self.critic.apply, state.critic_params, batch, rng,
                                      self.loss, self.config.head)

        (bc_term, q_term), vjp, metrics = jax.vjp(terms, state.head_params, has_aux=True)
        one, zero = jnp.ones_like(bc_term), jnp.zeros_like(bc_term)
        (grad_bc,) = vjp((one, zero))
        metrics = {**metrics, "actor_loss": bc_term + q_term, "grad_norm_bc": optax.global_norm(grad_bc)}
        if self.loss.q_weight == 0:
            return grad_bc, metrics
        (grad_q,) = vjp((zero, one))
        metrics["grad_norm_q"] = optax.global_norm(grad_q)
        return jax.tree_util.tree_map(jnp.add, grad_bc, grad_q), metrics

    def q_values(self, critic_params, observation: Mapping, actions) -> np.ndarray:
        """Per-sample Q (ensemble mean) of raw observations (proprio not yet z-scored)."""
        obs = dict(observation, state=(jnp.asarray(observation["state"]) - self.state_mean) / self.state_std)
        q = self.critic.apply({"params": critic_params}, obs, jnp.asarray(actions))
        return np.asarray(jnp.mean(q, axis=0))

    def q_value(self, critic_params, observation: Mapping, actions) -> float:
        """Mean (over samples and the ensemble) Q of raw observations."""
        return float(np.mean(self.q_values(critic_params, observation, actions)))

    def eval_actions(self, head_params, embedding, raw_state) -> np.ndarray:
        """The deterministic one-step actions (evaluation mode) for raw proprio states."""
        normalized = (jnp.asarray(raw_state) - self.state_mean) / self.state_std
        return np.asarray(self._eval_actions(head_params, jnp.asarray(embedding), normalized))

    def bc_error(self, state: LearnerState, embedding, raw_state, actions) -> float:
        """Mean squared error of the acting policy's deterministic one-step action against dataset actions."""
        return float(np.mean((self.eval_actions(state.policy_params, embedding, raw_state) - np.asarray(actions)) ** 2))

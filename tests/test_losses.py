"""Losses: TD target, Cal-QL bound and conservative term, consistency BC weighting, gradient flow."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vlarft.agents import losses
from vlarft.agents.config import LossConfig, get_config
from vlarft.agents.networks import ConsistencyHead, Critic

TINY = get_config("tiny")
A, B, S, E = 7, 6, 19, 16


def test_td_target_uses_ensemble_min():
    next_q = jnp.array([[1.0, 5.0, -2.0],
                        [3.0, 4.0, -1.0]])  # [K=2, B=3]
    y = losses.td_target(jnp.array([0.0, 1.0, 0.5]), jnp.array([1.0, 1.0, 0.0]), 0.9, next_q)
    np.testing.assert_allclose(y, [0.9 * 1.0, 1.0 + 0.9 * 4.0, 0.5], rtol=1e-6)


def test_calql_bound_raises_exactly_the_samples_below_the_mc_return():
    q = jnp.array([[[0.0, 2.0, -1.0], [5.0, 1.0, 3.0]],
                   [[1.5, 0.9, 4.0], [2.0, 2.5, 0.0]]])  # [K=2, B=2, S=3]
    mc = jnp.array([1.0, 2.5])
    bounded, raised = losses.calql_bound(q, mc)
    expected_raised = np.array([[[1, 0, 1], [0, 1, 0]],
                                [[0, 1, 0], [1, 0, 1]]], bool)
    np.testing.assert_array_equal(raised, expected_raised)
    np.testing.assert_array_equal(bounded, np.where(expected_raised, np.asarray(mc)[None, :, None], q))
    _, rate = losses.calql_conservative(q, jnp.zeros((2, 2)), mc, 1.0)
    assert float(rate) == pytest.approx(6 / 12)
    # Column 0 excluded from the bound (e.g. the random actions when calql_bound_random is False).
    bounded, raised = losses.calql_bound(q, mc, np.array([False, True, True]))
    assert not raised[..., 0].any() and bounded[0, 0, 0] == 0.0 and bounded[1, 1, 0] == 2.0
    _, rate = losses.calql_conservative(q, jnp.zeros((2, 2)), mc, 1.0, np.array([False, True, True]))
    assert float(rate) == pytest.approx(4 / 8)


def test_conservative_term_is_log_mean_exp_minus_data_q():
    q = jnp.array([[[0.0, 1.0]]])  # K = B = 1, S = 2
    q_data = jnp.array([[2.0]])
    term, rate = losses.calql_conservative(q, q_data, jnp.array([-10.0]), 1.0)
    assert float(rate) == 0.0
    assert float(term) == pytest.approx(math.log((1 + math.e + math.e ** 2) / 3) - 2.0, rel=1e-6)
    term, _ = losses.calql_conservative(q, q_data, jnp.array([-10.0]), 2.0)
    assert float(term) == pytest.approx(2 * math.log((1 + math.e ** 0.5 + math.e) / 3) - 2.0, rel=1e-6)
    term, rate = losses.calql_conservative(q, q_data, jnp.array([1.5]), 1.0)  # both samples raised to 1.5
    assert float(rate) == 1.0
    assert float(term) == pytest.approx(math.log((2 * math.e ** 1.5 + math.e ** 2) / 3) - 2.0, rel=1e-6)


def test_bc_weight_and_loss_by_hand():
    cfg = TINY.head
    assert float(losses.bc_weight(jnp.float32(0.5), cfg)) == pytest.approx(8.0)
    assert float(losses.bc_weight(jnp.float32(80.0), cfg)) == pytest.approx(4 + 1 / 6400, rel=1e-6)
    # With M = 2 the training level is always sigma_0 = sigma_max; a head that outputs 0 gives
    # loss = w(sigma_max) * mean(a^2).
    zero_head = lambda variables, x, sigma, embedding, state: jnp.zeros_like(x)
    actions = jnp.full((B, A), 0.5)
    for sigma_max, weight in ((80.0, 4 + 1 / 6400), (1.0, 5.0)):
        two = dataclasses.replace(cfg, num_scales=2, sigma_max=sigma_max)
        loss, metrics = losses.consistency_bc_loss(zero_head, {}, jnp.zeros((B, E)), jnp.zeros((B, S)), actions,
                                                   jax.random.PRNGKey(0), two)
        assert float(loss) == pytest.approx(weight * 0.25, rel=1e-6)
        assert float(metrics["bc_mse"]) == pytest.approx(0.25)


def test_bc_row_weights_restrict_the_bc_term_to_chosen_rows():
    """Rows weighted 0 (the policy's own online actions with online_bc_weight = 0) add nothing;
    the loss is the weighted mean over the other rows (hand-computed with a zero head)."""
    cfg = dataclasses.replace(TINY.head, num_scales=2, sigma_max=1.0)  # weight 5 at sigma = sigma_min..max
    zero_head = lambda variables, x, sigma, embedding, state: jnp.zeros_like(x)
    actions = jnp.stack([jnp.full((A,), 0.5), jnp.full((A,), 1.0), jnp.full((A,), 0.2)] + [jnp.zeros(A)] * (B - 3))
    embedding, state = jnp.zeros((B, E)), jnp.zeros((B, S))
    rows = jnp.zeros(B).at[0].set(1.0).at[2].set(3.0)
    loss, metrics = losses.consistency_bc_loss(zero_head, {}, embedding, state, actions, jax.random.PRNGKey(0), cfg,
                                               rows)
    assert float(metrics["bc_mse"]) == pytest.approx((0.25 + 3 * 0.04) / 4, rel=1e-6)
    assert float(loss) == pytest.approx(5.0 * (0.25 + 3 * 0.04) / 4, rel=1e-6)
    # loss_batch weighs only online (source 0), non-intervention rows.
    from vlarft.agents.learner import loss_batch

    obs = {"embedding": embedding[:4], "state": state[:4]}
    item = {"observation": obs, "next_observation": obs, "action": actions[:4], "reward": jnp.zeros(4),
            "discount": jnp.ones(4), "mc_return": jnp.zeros(4), "source": jnp.array([0, 0, 1, 1]),
            "intervention": jnp.array([False, True, False, True])}
    weights = loss_batch(item, jnp.zeros(S), jnp.ones(S), online_source=0, online_bc_weight=0.25)["bc_row_weights"]
    assert weights.tolist() == [0.25, 1.0, 1.0, 1.0]
    assert "bc_row_weights" not in loss_batch(item, jnp.zeros(S), jnp.ones(S), online_source=0)
    # Human corrections weighed on their own, whichever table they came from.
    weights = loss_batch(item, jnp.zeros(S), jnp.ones(S), online_source=0, online_bc_weight=0.25,
                         intervention_bc_weight=0.0)["bc_row_weights"]
    assert weights.tolist() == [0.25, 0.0, 1.0, 0.0]


def test_td_rewards_are_shaped_like_the_monte_carlo_returns():
    """The Cal-QL bound (MC returns, shaped when they were stored) and the TD target must share
    one reward scale: loss_batch shapes the rewards with the same ReturnConfig."""
    from vlarft.agents.config import ReturnConfig
    from vlarft.agents.learner import Learner, loss_batch
    from vlarft.datasets.replay.returns import monte_carlo_returns

    shaping = ReturnConfig(gamma=0.5, reward_scale=10.0, reward_bias=-1.0)
    obs = {"embedding": jnp.zeros((3, E)), "state": jnp.zeros((3, S))}
    item = {"observation": obs, "next_observation": obs, "action": jnp.zeros((3, A)),
            "reward": jnp.array([0.0, 0.0, 1.0]), "discount": jnp.array([1.0, 1.0, 0.0]),
            "mc_return": jnp.asarray(monte_carlo_returns([0, 0, 1], True, 0.5, 10.0, -1.0))}
    batch = loss_batch(item, jnp.zeros(S), jnp.ones(S), returns=shaping)
    assert batch["rewards"].tolist() == [-1.0, -1.0, 9.0]
    # With a zero critic, r' + gamma * d * 0 reproduces the MC return of the last transition.
    assert float(batch["rewards"][2]) == pytest.approx(float(item["mc_return"][2]))
    mismatched = dataclasses.replace(TINY, returns=ReturnConfig(gamma=0.95))
    with pytest.raises(ValueError, match="gamma 0.95 but the TD target uses 0.98"):
        Learner(mismatched, LossConfig(), A, (), np.zeros(S), np.ones(S))


def const_critic(variables, observation, actions, train=False, rngs=None):
    """Q_k(s, a) = c_k for every state and action."""
    c = variables["params"]["c"]
    return jnp.broadcast_to(c.reshape((-1,) + (1,) * (actions.ndim - 1)), c.shape + actions.shape[:-1])


@pytest.fixture(scope="module")
def nets():
    head = ConsistencyHead(dataclasses.replace(TINY.head, hidden=(32, 32)), A)
    critic = Critic(dataclasses.replace(TINY.critic, hidden=(32, 32)), ())
    keys = jax.random.split(jax.random.PRNGKey(0), 8)
    obs = lambda k: {"embedding": jax.random.normal(k, (B, E)), "state": jax.random.normal(keys[7], (B, S))}
    batch = {"observations": obs(keys[0]), "next_observations": obs(keys[1]),
             "actions": jax.random.uniform(keys[2], (B, A), minval=-1, maxval=1),
             "rewards": jnp.arange(B, dtype=jnp.float32) / B, "discounts": jnp.ones(B).at[0].set(0.0),
             "mc_returns": jax.random.normal(keys[3], (B,))}
    head_params = jax.jit(head.init)(keys[4], batch["actions"], 1.0, batch["observations"]["embedding"],
                                     batch["observations"]["state"])["params"]
    critic_params = jax.jit(critic.init)(keys[5], batch["observations"], batch["actions"])["params"]
    return head, critic, head_params, critic_params, batch


def clip_head(variables, x, sigma, embedding, state):
    return jnp.clip(x, -1.0, 1.0)


def test_critic_loss_assembly_by_hand():
    obs = {"embedding": jnp.zeros((B, E)), "state": jnp.zeros((B, S))}
    batch = dict(observations=obs, next_observations=obs, actions=jnp.zeros((B, A)),
                 rewards=jnp.array([0.0, 1.0] * 3), discounts=jnp.array([1.0, 0.0] * 3),
                 mc_returns=jnp.array([0.5, -1.0] * 3))
    c, c_target = np.array([0.0, 1.0]), np.array([2.0, 5.0])
    cfg = LossConfig(cql_alpha=0.3, cql_n_actions=2, calql_bound_random=False, discount=0.9)
    loss, m = losses.critic_loss(const_critic, {"c": jnp.asarray(c)}, {"c": jnp.asarray(c_target)}, clip_head,
                                 {}, batch, jax.random.PRNGKey(1), cfg, TINY.head)
    y = np.array([0.0 + 0.9 * 2.0, 1.0])  # per state parity: r + gamma * discount * min_k target
    td = np.mean([(ck - yb) ** 2 for ck in c for yb in y])
    terms, raised = [], 0
    for ck in c:
        for mb in (0.5, -1.0):  # 2 random (unbounded), 2 current + 2 next (bounded), then q_data
            values = [ck] * 2 + [max(ck, mb)] * 4 + [ck]
            raised += 4 * (ck < mb)
            terms.append(math.log(np.mean(np.exp(values))) - ck)
    assert float(m["td_loss"]) == pytest.approx(td, rel=1e-6)
    assert float(m["cql_term"]) == pytest.approx(np.mean(terms), rel=1e-6)
    assert float(m["bound_rate"]) == pytest.approx(raised / 16)
    assert float(loss) == pytest.approx(td + 0.3 * np.mean(terms), rel=1e-6)
    assert float(m["q_target"]) == pytest.approx(np.mean(y))
    no_cql, m0 = losses.critic_loss(const_critic, {"c": jnp.asarray(c)}, {"c": jnp.asarray(c_target)}, clip_head,
                                    {}, batch, jax.random.PRNGKey(1), LossConfig(cql_alpha=0.0, discount=0.9),
                                    TINY.head)
    assert float(no_cql) == pytest.approx(td, rel=1e-6) and "cql_term" not in m0


def is_zero(tree):
    return all(bool(jnp.all(x == 0)) for x in jax.tree_util.tree_leaves(tree))


def test_gradient_flow(nets):
    head, critic, head_params, critic_params, batch = nets
    cfg, rng = LossConfig(), jax.random.PRNGKey(2)
    head_cfg = head.config

    @jax.jit
    def grads(hp, cp):
        actor = jax.grad(losses.actor_loss, argnums=(1, 3), has_aux=True)(head.apply, hp, critic.apply, cp, batch, rng,
                                                                           cfg, head_cfg)
        crit = jax.grad(losses.critic_loss, argnums=(1, 2, 4), has_aux=True)(critic.apply, cp, cp, head.apply, hp,
                                                                              batch, rng, cfg, head_cfg)
        return actor, crit

    ((actor_head, actor_critic), actor_metrics), ((crit_critic, crit_target, crit_head), critic_metrics) = grads(
        head_params, critic_params)
    assert is_zero(actor_critic) and is_zero(crit_target) and is_zero(crit_head)
    assert not is_zero(actor_head) and not is_zero(crit_critic)
    assert {"actor_loss", "bc_loss", "bc_mse", "q_loss", "q_pi"} <= set(actor_metrics)
    assert {"critic_loss", "td_loss", "cql_term", "bound_rate", "q_data", "q_target", "q_random", "q_current",
            "q_next"} <= set(critic_metrics)
    assert 0.0 <= float(critic_metrics["bound_rate"]) <= 1.0
    assert all(np.isfinite(float(v)) for v in {**actor_metrics, **critic_metrics}.values())
    # The actor's Q term: eta * -mean Q(s, a_pi), and SFT needs no critic at all.
    loss, m = losses.actor_loss(head.apply, head_params, None, None, batch, rng, LossConfig(q_weight=0.0), head_cfg)
    assert float(loss) == pytest.approx(float(m["bc_loss"])) and "q_loss" not in m
    assert float(actor_metrics["actor_loss"]) == pytest.approx(
        float(actor_metrics["bc_loss"]) + 0.1 * float(actor_metrics["q_loss"]), rel=1e-5)


def test_actor_q_term_normalisation_and_ensemble_reduction_by_hand(nets):
    head, _, head_params, _, batch = nets
    c = {"c": jnp.asarray([-2.0, -6.0])}  # Q_k(s, a) = c_k: mean -4, min -6
    rng = jax.random.PRNGKey(3)
    terms = lambda cfg: losses.actor_terms(head.apply, head_params, const_critic, c, batch, rng, cfg, head.config)
    (bc, q_term), m = terms(LossConfig(q_weight=0.5))
    assert float(m["q_pi"]) == pytest.approx(-4.0) and float(q_term) == pytest.approx(0.5 * 4.0)
    (_, q_term), m = terms(LossConfig(q_weight=0.5, actor_q_reduction="min"))
    assert float(m["q_pi"]) == pytest.approx(-6.0) and float(q_term) == pytest.approx(0.5 * 6.0)
    # Normalised: -Q / mean|Q| = -(-4) / 4 = 1, whatever the reward scale.
    (_, q_term), m = terms(LossConfig(q_weight=0.5, q_normalize=True))
    assert float(q_term) == pytest.approx(0.5, rel=1e-5) and float(m["q_scale"]) == pytest.approx(4.0, rel=1e-5)
    c10 = {"c": 10 * c["c"]}
    (_, q10), _ = losses.actor_terms(head.apply, head_params, const_critic, c10, batch, rng,
                                     LossConfig(q_weight=0.5, q_normalize=True), head.config)
    assert float(q10) == pytest.approx(float(q_term), rel=1e-5)
    assert 0.0 <= float(m["saturation"]) <= float(m["saturation_max_dim"]) <= 1.0


def test_bc_loss_reads_the_unbounded_output_with_the_straight_through_bound(nets):
    """A dimension pushed far beyond the box still gets a BC gradient back towards its target
    (at sigma_max, where acting samples: c_out ~ 0.5, so the +20 bias saturates it)."""
    _, _, head_params, _, batch = nets
    rng = jax.random.PRNGKey(4)
    pushed = jax.tree_util.tree_map(lambda x: x, head_params)
    pushed["out"] = dict(pushed["out"], bias=pushed["out"]["bias"].at[0].add(20.0))  # dim 0 far above +1
    targets = dict(batch, actions=batch["actions"].at[:, 0].set(-1.0))
    for bound, expect_gradient in (("clip", False), ("straight_through", True)):
        cfg = dataclasses.replace(TINY.head, hidden=(32, 32), action_bound=bound)
        head = ConsistencyHead(cfg, A)
        noisy = targets["actions"] + cfg.sigma_max * jax.random.normal(rng, targets["actions"].shape)
        grad = jax.grad(lambda p: jnp.mean((head.apply({"params": p}, noisy, cfg.sigma_max,
                                                       targets["observations"]["embedding"],
                                                       targets["observations"]["state"]) - targets["actions"]) ** 2))(
            pushed)
        bias_grad = float(grad["out"]["bias"][0])
        assert (bias_grad > 0) == expect_gradient, (bound, bias_grad)  # > 0: descent lowers the output


def test_advantage_weights_favour_the_actions_the_critic_ranks_higher(nets):
    head, _, head_params, _, batch = nets

    def quadratic_critic(variables, observation, actions, train=False, rngs=None):
        """One member: Q(s, a) = 1 - |a|^2, best at a = 0."""
        return (1.0 - jnp.sum(actions ** 2, axis=-1))[None]

    data = batch["actions"].at[0].set(0.0).at[1].set(0.9)  # the best action and a poor one
    rows = dict(batch, actions=data)
    cfg = LossConfig(awr_temperature=0.1, awr_max_weight=5.0)
    weights, m = losses.advantage_weights(quadratic_critic, {}, head.apply, head_params, rows, jax.random.PRNGKey(5),
                                          cfg, head.config)
    assert weights.shape == (B,) and float(jnp.max(weights)) <= 5.0 and float(jnp.min(weights)) >= 0.0
    assert float(weights[0]) > float(weights[1])
    assert {"advantage", "awr_weight_mean", "awr_weight_max"} <= set(m)
    # In the actor loss the weights multiply the BC rows: the term changes, the Q term is untouched.
    (bc_plain, _), _ = losses.actor_terms(head.apply, head_params, quadratic_critic, {}, rows, jax.random.PRNGKey(6),
                                          LossConfig(q_weight=0.0), head.config)
    (bc_awr, _), m = losses.actor_terms(head.apply, head_params, quadratic_critic, {}, rows, jax.random.PRNGKey(6),
                                        dataclasses.replace(cfg, q_weight=0.0), head.config)
    assert float(bc_awr) != pytest.approx(float(bc_plain)) and "awr_weight_mean" in m


def test_advantage_weights_scale_by_the_spread_of_q_so_a_shift_of_q_does_not_change_them(nets):
    """Hand-computed: Q(s, a) and Q(s, a_pi) fixed per row; the temperature's scale is the std of
    the 2B values (shift invariant) or their mean |Q| (which shrinks as Q crosses zero)."""
    head, _, head_params, _, batch = nets
    rng = np.random.default_rng(0)
    q_data, q_pi = rng.uniform(-0.3, 0.3, B).astype(np.float32), rng.uniform(-0.3, 0.3, B).astype(np.float32)

    def weights(kind: str, shift: float) -> np.ndarray:
        def fixed_critic(variables, observation, actions, train=False, rngs=None):
            assert actions.shape[:2] == (B, 2)  # the data action and a policy sample per row
            return jnp.stack([q_data + shift, q_pi + shift], axis=1)[None]

        cfg = LossConfig(awr_temperature=0.5, awr_max_weight=1e6, awr_scale=kind)
        w, _ = losses.advantage_weights(fixed_critic, {}, head.apply, head_params, batch, jax.random.PRNGKey(5), cfg,
                                        head.config)
        return np.asarray(w)

    q = np.concatenate([q_data, q_pi])
    np.testing.assert_allclose(weights("std", 0.0), np.exp((q_data - q_pi) / (0.5 * q.std())), rtol=1e-4)
    np.testing.assert_allclose(weights("mean_abs", 0.0), np.exp((q_data - q_pi) / (0.5 * np.abs(q).mean())),
                               rtol=1e-4)
    np.testing.assert_allclose(weights("std", 5.0), weights("std", 0.0), rtol=1e-4)  # a shift of Q: same weights
    # mean|Q| grows with the shift (5 vs ~0.15), so the same advantages give weights nearer 1.
    assert np.abs(np.log(weights("mean_abs", 5.0))).max() < 0.1 * np.abs(np.log(weights("mean_abs", 0.0))).max()
    assert LossConfig().awr_scale == "std"
    with pytest.raises(ValueError, match="awr_scale.*std, mean_abs"):
        LossConfig(awr_scale="max")


def test_loss_presets():
    from vlarft.agents.config import loss_preset

    stable_offline, stable_online = loss_preset("stable", "offline"), loss_preset("stable", "online")
    assert stable_offline.q_weight == 0.0 and stable_offline.cql_alpha == 0.01  # critic trained, actor by BC
    assert stable_online.q_weight == 0.0 and stable_online.awr_temperature > 0 and stable_online.online_bc_weight == 1
    assert loss_preset("paper", "online").q_weight == 1.0 and loss_preset("paper", "offline").q_weight == 0.1
    with pytest.raises(ValueError, match="stable, paper, reference"):
        loss_preset("mine", "online")

"""The learner's fast paths: k scanned steps == k sequential steps; the critic (split first layer, row
layers with their own gradients) == the MLP on the concatenation, values and gradients; its members applied
one by one == `nn.vmap` of them; the row ops' gradients (`rows.py`) == the plain ops'."""

import dataclasses
import functools
import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vlarft.agents.config import get_config, loss_preset
from vlarft.agents.learner import Learner
from vlarft.agents.networks import Critic
from vlarft.agents.networks.critic import QEnsemble, QMember
from vlarft.agents.networks.rows import PRODUCT_MIN_ROWS, add_to_rows, column_sums, rows_matmul, scale_rows

A, S, E = 7, 19, 16
ROWS = (3, 5)  # rows per batch from each of two source tables (online first)


def random_rows(rng, n: int, source: int) -> dict:
    def obs():
        return {"embedding": rng.normal(size=(n, E)).astype(np.float32), "state": rng.normal(size=(n, S)).astype(np.float32)}

    return {"observation": obs(), "next_observation": obs(), "action": rng.uniform(-1, 1, (n, A)).astype(np.float32),
            "reward": rng.normal(size=n).astype(np.float32), "discount": np.ones(n, np.float32),
            "mc_return": rng.normal(size=n).astype(np.float32), "intervention": rng.random(n) < 0.3,
            "source": np.full(n, source, np.int32)}


def concat(*parts):
    return jax.tree_util.tree_map(lambda *xs: np.concatenate(xs), *parts)


def test_scanned_steps_equal_sequential_steps():
    config = get_config("tiny")
    config = dataclasses.replace(config, head=dataclasses.replace(config.head, hidden=(32, 32)),
                                 critic=dataclasses.replace(config.critic, hidden=(32, 32)))
    loss = dataclasses.replace(loss_preset("paper", "online"), online_bc_weight=0.5)
    learner = Learner(config, loss, A, (), np.zeros(S), 2 * np.ones(S), online_source=0, rows_per_source=ROWS)
    steps, ratio = 3, loss.critic_actor_ratio
    rng = np.random.default_rng(0)
    # per step and source: ratio x rows rows (the step's batches), as the iterator delivers them
    per_step = [[random_rows(rng, ratio * rows, source) for source, rows in enumerate(ROWS)] for _ in range(steps)]
    step_items = [concat(*blocks) for blocks in per_step]
    # the k-step item: per source, its rows of step 0, 1, 2 in turn
    item = concat(*(per_step[i][source] for source in range(len(ROWS)) for i in range(steps)))
    state = learner.init(jax.random.PRNGKey(1), step_items[0])

    sequential = state
    for step_item in step_items:
        sequential, last = learner.step(sequential, step_item)
    scanned, metrics = learner.steps(state, item, steps)

    assert int(scanned.step) == int(sequential.step) == steps
    for got, want in zip(jax.tree_util.tree_leaves(scanned), jax.tree_util.tree_leaves(sequential)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=2e-4, atol=2e-5)
    assert metrics.keys() == last.keys()
    np.testing.assert_allclose(float(metrics["critic_loss"]), float(last["critic_loss"]), rtol=1e-4)
    changed = [not np.allclose(a, b) for a, b in zip(jax.tree_util.tree_leaves(scanned.critic_params),
                                                      jax.tree_util.tree_leaves(state.critic_params))]
    assert all(changed)  # the steps did update every critic leaf


def test_one_step_through_steps_is_the_single_step_program():
    """`steps(..., 1)` (a pixel critic's stages) runs `step`'s program, not a scan of one: on XLA CPU
    a scan of one pixel-critic step took 2.9x its time."""
    config = get_config("tiny")
    config = dataclasses.replace(config, head=dataclasses.replace(config.head, hidden=(32, 32)),
                                 critic=dataclasses.replace(config.critic, hidden=(32, 32)))
    loss = loss_preset("paper", "online")
    learner = Learner(config, loss, A, (), np.zeros(S), np.ones(S), online_source=0, rows_per_source=ROWS)
    rng = np.random.default_rng(3)
    item = concat(*(random_rows(rng, loss.critic_actor_ratio * rows, source) for source, rows in enumerate(ROWS)))
    state = learner.init(jax.random.PRNGKey(2), item)
    stepped, step_metrics = learner.step(state, item)
    through_steps, steps_metrics = learner.steps(state, item, 1)
    assert not learner._scans  # no scan was compiled
    for got, want in zip(jax.tree_util.tree_leaves(through_steps), jax.tree_util.tree_leaves(stepped)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert steps_metrics.keys() == step_metrics.keys() and steps_metrics["cql_alpha"] == loss.cql_alpha


def test_critic_equals_the_mlp_on_the_concatenated_input_values_and_gradients():
    config = dataclasses.replace(get_config("tiny").critic, hidden=(16, 8))
    critic = Critic(config, ())
    rng = np.random.default_rng(2)
    obs = {"embedding": rng.normal(size=(4, E)).astype(np.float32), "state": rng.normal(size=(4, S)).astype(np.float32)}
    actions = rng.uniform(-1, 1, (4, 3, A)).astype(np.float32)
    params = critic.init(jax.random.PRNGKey(0), obs, actions)["params"]
    q = np.asarray(critic.apply({"params": params}, obs, actions))
    assert q.shape == (2, 4, 3)
    features = np.asarray(critic.apply({"params": params}, obs, method="encode"))
    x = np.concatenate([np.broadcast_to(features[:, None], (4, 3, features.shape[-1])), actions], axis=-1)

    def by_hand(ensemble):  # Dense -> LayerNorm -> tanh per hidden size, then Dense(1), per member
        out = []
        for k in range(2):
            member = jax.tree_util.tree_map(lambda p: p[k], ensemble)
            h = x
            for i in range(2):
                dense, norm = member["mlp"][f"Dense_{i}"], member["mlp"][f"LayerNorm_{i}"]
                h = h @ dense["kernel"] + dense["bias"]
                h = (h - h.mean(-1, keepdims=True)) / jnp.sqrt(h.var(-1, keepdims=True) + 1e-6)
                h = jnp.tanh(h * norm["scale"] + norm["bias"])
            out.append((h @ member["q"]["kernel"] + member["q"]["bias"])[..., 0])
        return jnp.stack(out)

    np.testing.assert_allclose(q, by_hand(params["ensemble"]), rtol=1e-4, atol=1e-5)
    # the ensemble's parameter gradients (the row layers' column sums) at fixed features
    weights = rng.normal(size=q.shape).astype(np.float32)
    got = jax.grad(lambda e: jnp.sum(weights * critic.apply({"params": {**params, "ensemble": e}}, obs, actions)))(
        params["ensemble"])
    want = jax.grad(lambda e: jnp.sum(weights * by_hand(e)))(params["ensemble"])
    for path, g in jax.tree_util.tree_leaves_with_path(got):
        w = functools.reduce(lambda tree, key: tree[key.key], path, want)
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5, err_msg=jax.tree_util.keystr(path))


def test_ensemble_equals_vmapped_members_values_and_gradients():
    rng = np.random.default_rng(3)
    features = rng.normal(size=(4, E)).astype(np.float32)
    actions = rng.uniform(-1, 1, (4, 3, A)).astype(np.float32)
    memberwise = QEnsemble(2, (16, 8), memberwise_min_rows=0)  # one by one even on these few rows
    at_once = QEnsemble(2, (16, 8))  # few rows: vmap
    vmapped = nn.vmap(QMember, variable_axes={"params": 0}, split_rngs={"params": True},
                      in_axes=None, out_axes=0, axis_size=2)((16, 8))
    params = memberwise.init(jax.random.PRNGKey(0), features, actions)["params"]
    reference = vmapped.init(jax.random.PRNGKey(0), features, actions)["params"]
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(reference)
    for got, want in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(reference)):
        assert got.shape == want.shape
    kernel = np.asarray(params["mlp"]["Dense_0"]["kernel"])
    assert not np.allclose(kernel[0], kernel[1])  # members initialised independently

    def loss(module, p, acts):
        return jnp.sum(jnp.sin(module.apply({"params": p}, features, acts)))

    # n actions per observation and one, each with the members one by one and at once
    for module, (acts, shape) in itertools.product((memberwise, at_once),
                                                   ((actions, (2, 4, 3)), (actions[:, 0], (2, 4)))):
        q = module.apply({"params": params}, features, acts)
        assert q.shape == shape
        np.testing.assert_allclose(q, vmapped.apply({"params": params}, features, acts), rtol=1e-5, atol=1e-6)
        for argnums in (0, 1):  # parameters, and the actions (the actor's gradient flows through them)
            got = jax.grad(lambda p, a: loss(module, p, a), argnums)(params, acts)
            want = jax.grad(lambda p, a: loss(vmapped, p, a), argnums)(params, acts)
            for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
                np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def test_rows_matmul_gradient_equals_the_plain_product():
    rng = np.random.default_rng(4)
    rows = rng.normal(size=(5, 3, 4)).astype(np.float32)
    kernel = rng.normal(size=(4, 6)).astype(np.float32)
    weights = rng.normal(size=(5, 3, 6)).astype(np.float32)
    np.testing.assert_allclose(rows_matmul(rows, kernel), rows @ kernel, rtol=1e-6)
    got = jax.grad(lambda r, k: jnp.sum(rows_matmul(r, k) * weights), argnums=(0, 1))(rows, kernel)
    # by hand: d/drows = weights @ kernel^T; d/dkernel = sum over rows of rows^T weights
    np.testing.assert_allclose(got[0], weights @ kernel.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[1], np.einsum("bni,bno->io", rows, weights), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(5, 3, 4), (2, PRODUCT_MIN_ROWS // 2 + 1, 4)])  # a sum; a matrix product
def test_row_ops_gradients_equal_the_plain_ops(shape):
    rng = np.random.default_rng(5)
    rows = rng.normal(size=shape).astype(np.float32)
    vector = rng.normal(size=shape[-1]).astype(np.float32)
    weights = rng.normal(size=shape).astype(np.float32)
    np.testing.assert_allclose(column_sums(rows), rows.sum((0, 1)), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(add_to_rows(rows, vector), rows + vector, rtol=1e-6)
    np.testing.assert_allclose(scale_rows(rows, vector), rows * vector, rtol=1e-6)
    # by hand: d/drows of sum(w * (r + v)) = w, d/dv = w summed over rows; of sum(w * r * v): w * v, sum(w * r)
    added = jax.grad(lambda r, v: jnp.sum(add_to_rows(r, v) * weights), argnums=(0, 1))(rows, vector)
    np.testing.assert_allclose(added[0], weights, rtol=1e-6)
    np.testing.assert_allclose(added[1], weights.sum((0, 1)), rtol=1e-4, atol=1e-4)
    scaled = jax.grad(lambda r, v: jnp.sum(scale_rows(r, v) * weights), argnums=(0, 1))(rows, vector)
    np.testing.assert_allclose(scaled[0], weights * vector, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scaled[1], (weights * rows).sum((0, 1)), rtol=1e-4, atol=1e-4)

"""k learner steps in one scanned call (`Learner.steps`) equal k calls of `Learner.step`."""

import dataclasses

import jax
import numpy as np

from vlarft.agents.config import get_config, loss_preset
from vlarft.agents.learner import Learner

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

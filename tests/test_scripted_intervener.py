"""The scripted intervener: idle while the policy progresses, takes over when it stalls."""

import vlarft.robot_io.sim  # noqa: F401  (first: selects headless EGL before mujoco is imported)

import numpy as np
import pytest

from vlarft.robot_io.contract import INFO_INTERVENTION
from vlarft.robot_io.factory import make_env
from vlarft.robot_io.intervention import InterventionWrapper
from vlarft.robot_io.sim.scripted_intervener import BAD_STATE, STALL, IntervenerKnobs, ScriptedIntervener
from vlarft.robot_io.sim.scripted_operator import OperatorKnobs, ScriptedOperator
from vlarft.robot_io.teleop import make_teleop

TASKS = ("pick_cube", "insert_peg", "hang_ring")
SEEDS = range(10)


def zero_policy(env, seed):
    return lambda: np.zeros(7, np.float32)


def expert_policy(env, seed):
    expert = ScriptedOperator(env, seed=seed, knobs=OperatorKnobs.noise_free())
    expert.reset()
    return lambda: expert.poll().action


def drift_policy(env, seed):  # heads straight for the +y side of the workspace
    return lambda: np.array([0, 1, 0, 0, 0, 0, -1], np.float32)


def run_episode(env, device, make_policy, seed):
    """Episode via InterventionWrapper: (success, flags, device.engaged, executed actions, infos)."""
    wrapper = InterventionWrapper(env, device)
    wrapper.reset(seed=seed)
    policy = make_policy(env, seed)
    flags, engaged, actions, infos = [], [], [], []
    while True:
        _, _, terminated, truncated, info = wrapper.step(policy())
        flags.append(info[INFO_INTERVENTION])
        engaged.append(device.engaged)
        actions.append(info["executed_action"])
        infos.append(info)
        if terminated or truncated:
            return info["success"], np.array(flags), np.array(engaged), np.array(actions), infos


def runs(flags: np.ndarray) -> list[int]:
    """Lengths of the runs of True in `flags`."""
    edges = np.diff(np.concatenate([[0], flags.astype(int), [0]]))
    return list(np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1))


@pytest.fixture(scope="module")
def envs():
    return {task: make_env(f"sim:{task}", render_images=False) for task in TASKS}


@pytest.mark.parametrize("task", TASKS)
def test_idle_policy_gets_corrected_to_success(envs, task):
    env, knobs = envs[task], IntervenerKnobs()
    successes = 0
    for seed in SEEDS:
        device = ScriptedIntervener(env, seed=seed)
        success, flags, engaged, _, infos = run_episode(env, device, zero_policy, seed)
        successes += success
        assert np.argmax(flags) == knobs.patience + knobs.reaction_delay, seed  # first engaged step
        np.testing.assert_array_equal(flags, engaged)
        assert flags.sum() == device.intervention_steps == infos[-1]["intervention_steps"]
        assert len(runs(flags)) == device.interventions == infos[-1]["intervention_segments"]
        assert 1 <= device.interventions <= knobs.max_interventions
        assert max(runs(flags)) <= device.burst_steps and device.last_trigger == STALL
    assert successes >= 0.7 * len(SEEDS), (task, successes)


@pytest.mark.parametrize("task", TASKS)
def test_noise_free_expert_policy_is_left_alone(envs, task):
    env = envs[task]
    engaged_episodes = 0
    for seed in SEEDS:
        device = ScriptedIntervener(env, seed=seed)
        success, flags, _, _, _ = run_episode(env, device, expert_policy, seed)
        assert success, seed
        engaged_episodes += bool(flags.any())
    assert engaged_episodes <= 1, (task, engaged_episodes)


def test_budget_limits_the_bursts(envs):
    env = envs["pick_cube"]
    device = ScriptedIntervener(env, seed=3, max_interventions=1, burst_steps=5)
    _, flags, _, _, _ = run_episode(env, device, zero_policy, seed=3)
    assert runs(flags) == [5] and device.interventions == 1 and len(flags) == 100
    device = ScriptedIntervener(env, seed=3, max_interventions=0)
    assert not run_episode(env, device, zero_policy, seed=3)[1].any()
    device = ScriptedIntervener(env, seed=3, probability=0.0)
    assert not run_episode(env, device, zero_policy, seed=3)[1].any()
    assert device.total_interventions == 0


def test_bad_state_triggers_before_patience(envs):
    env = envs["pick_cube"]
    device = ScriptedIntervener(env, seed=0, patience=50)
    _, flags, _, _, _ = run_episode(env, device, drift_policy, seed=0)
    assert 0 < np.argmax(flags) < 50 and device.last_trigger == BAD_STATE


def grasp_then_stall_policy(env, seed):  # the expert until the cube is in the fingers, then holds still, closed
    expert = expert_policy(env, seed)
    return lambda: (np.array([0, 0, 0, 0, 0, 0, 1], np.float32)
                    if env.unwrapped.privileged_state()["cube_grasped"] else expert())


def test_a_held_cube_is_lifted_not_let_go(envs):
    """Taking over from a policy that grasped the cube and stalled, the human lifts it: the
    intervention labels never open the gripper on a held cube (the script does not restart at
    'hover over the cube with the fingers open')."""
    env = envs["pick_cube"]
    for seed in range(5):
        device = ScriptedIntervener(env, seed=seed)
        success, flags, _, actions, _ = run_episode(env, device, grasp_then_stall_policy, seed)
        assert success and flags.any() and device.last_trigger == STALL, seed
        assert np.all(actions[flags, 6] > 0), seed  # every intervention step keeps the gripper closed
        assert actions[flags, 2].mean() > 0, seed  # and goes up


def ring_knocking_policy(env, seed):  # lets the ring drop, comes down beside it, then sweeps it away
    steps = iter(range(1000))

    def act():
        priv = env.unwrapped.privileged_state()
        goal = priv["ring_pos"] + [0.0, -0.07, 0.0]
        if next(steps) < 5:  # open and wait: the ring falls to the table
            goal = priv["tcp_pos"]
        elif np.linalg.norm((goal - priv["tcp_pos"])[:2]) < 0.01 or priv["tcp_pos"][2] < 0.02:
            goal = priv["tcp_pos"] + [0.0, 0.05, 0.0]
        return np.append(np.clip((goal - priv["tcp_pos"]) / 0.02, -1, 1), [0, 0, 0, -1]).astype(np.float32)
    return act


def test_knocked_ring_is_a_bad_state(envs):
    env = envs["hang_ring"]
    device = ScriptedIntervener(env, seed=0, patience=50, edge_margin=0.0)  # no workspace-edge trigger
    _, flags, _, _, _ = run_episode(env, device, ring_knocking_policy, seed=0)
    assert 10 < np.argmax(flags) < 50 and device.last_trigger == BAD_STATE  # after the drop, once swept away


def test_release_progress_hands_back_early(envs):
    env = envs["insert_peg"]
    device = ScriptedIntervener(env, seed=1, release_progress=0.05, min_burst_steps=3)
    _, flags, _, _, _ = run_episode(env, device, zero_policy, seed=1)
    assert len(runs(flags)) >= 2 and runs(flags)[0] < device.burst_steps  # released, not done


@pytest.mark.parametrize("task", TASKS)
def test_deterministic_per_seed(task):
    def episode(device_seed):
        env = make_env(f"sim:{task}", render_images=False)
        device = ScriptedIntervener(env, seed=device_seed, probability=0.5)
        return run_episode(env, device, zero_policy, seed=7)

    first, again, other = episode(4), episode(4), episode(5)
    np.testing.assert_array_equal(first[1], again[1])
    np.testing.assert_array_equal(first[3], again[3])
    n = min(len(first[3]), len(other[3]))
    assert not np.array_equal(first[3][:n], other[3][:n])


def test_registered_in_make_teleop_and_validates(envs):
    env = envs["insert_peg"]
    device = make_teleop("scripted_intervention", env=env, seed=2, patience=4)
    assert isinstance(device, ScriptedIntervener) and device.knobs.patience == 4
    with pytest.raises(ValueError, match="env"):
        make_teleop("scripted_intervention")
    with pytest.raises(TypeError):
        ScriptedIntervener(env, sloppiness=3)
    with pytest.raises(ValueError, match="probability"):
        IntervenerKnobs(probability=1.5)
    other = make_env("sim:pick_cube", render_images=False)
    other.unwrapped.task = type("Other", (), {"name": "juggle"})()
    with pytest.raises(ValueError, match="pick_cube"):
        ScriptedIntervener(other)

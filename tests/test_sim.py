"""The MuJoCo simulator against the environment contract (real physics and rendering, no mocks)."""

import vlarft.robot_io.sim  # noqa: F401  (first: selects headless EGL before mujoco is imported)

import mujoco
import numpy as np
import pytest

from vlarft.robot_io.contract import (
    ACTION_DIM,
    INFO_SUCCESS,
    STATE_DIM,
    action_space,
    image_key,
    observation_space,
    state_slice,
)
from vlarft.robot_io.factory import list_envs, make_env, sim_tasks
from vlarft.robot_io.sim import SimConfig, SimRobotEnv
from vlarft.robot_io.sim.scripted_operator import OperatorKnobs, ScriptedOperator

TASKS = ("pick_cube", "insert_peg", "hang_ring")
OBJECT_KEY = {"pick_cube": "cube_pos", "insert_peg": "hole_top_pos", "hang_ring": "post_top_pos"}
POS_SCALE, ROT_SCALE = SimConfig().pos_scale, SimConfig().rot_scale


@pytest.fixture
def fast_env():
    """A pick_cube env without rendering (physics only)."""
    env = SimRobotEnv(task="pick_cube", render_images=False)
    yield env
    env.close()


def action(**components) -> np.ndarray:
    """A 7-d action from named components (dx=..., gripper=...), zero elsewhere."""
    names = ("dx", "dy", "dz", "drx", "dry", "drz", "gripper")
    out = np.zeros(ACTION_DIM, np.float32)
    for name, value in components.items():
        out[names.index(name)] = value
    return out


def tcp(obs) -> np.ndarray:
    return obs["state"][state_slice("tcp_pos")].astype(np.float64)


@pytest.mark.parametrize("task", TASKS)
def test_spaces_shapes_and_spec_match_the_contract(task):
    env = make_env(f"sim:{task}")
    try:
        spec = env.unwrapped.robot_spec
        assert (spec.robot, spec.task, spec.control_hz, spec.max_episode_steps) == ("sim_gripper", task, 10, 100)
        assert spec.instruction and spec.cameras == {"front": (128, 128), "wrist": (128, 128)}
        assert (spec.state_dim, spec.action_dim) == (STATE_DIM, ACTION_DIM)
        assert env.observation_space == observation_space(spec)
        assert env.action_space == action_space(spec)
        obs, info = env.reset(seed=0)
        assert info[INFO_SUCCESS] is False and env.observation_space.contains(obs)
        for camera in ("front", "wrist"):
            assert obs[image_key(camera)].shape == (128, 128, 3) and obs[image_key(camera)].dtype == np.uint8
        assert obs["state"].shape == (STATE_DIM,) and obs["state"].dtype == np.float32
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs) and isinstance(reward, float)
        assert isinstance(terminated, bool) and isinstance(truncated, bool) and INFO_SUCCESS in info
        state = obs["state"]
        assert 0.0 <= state[state_slice("gripper")][0] <= 1.0
        assert np.all(np.isfinite(state))
    finally:
        env.close()


def test_factory_lists_tasks_and_rejects_unknown_names():
    assert set(sim_tasks()) == set(TASKS)
    assert {e for e in list_envs() if e.startswith("sim:")} == {f"sim:{t}" for t in TASKS}
    assert {"franka:pick_place", "franka:open_drawer", "franka:peg_insertion"} <= set(list_envs())
    for bad in ("sim:fly_away", "real:pick_cube", "pick_cube"):
        with pytest.raises(ValueError, match="sim:pick_cube"):
            make_env(bad)


@pytest.mark.parametrize("task", TASKS)
def test_reset_is_deterministic_per_seed(task):
    first, second = SimRobotEnv(task=task), SimRobotEnv(task=task)
    try:
        obs_a, _ = first.reset(seed=7)
        obs_b, _ = second.reset(seed=7)
        first.reset(seed=8)
        obs_c, _ = first.reset(seed=7)  # same env, same seed again
        for obs in (obs_b, obs_c):
            assert set(obs) == set(obs_a)
            for key in obs_a:
                np.testing.assert_array_equal(obs[key], obs_a[key])
        step_a = first.step(action(dx=0.5, gripper=1))[0]
        step_b = second.step(action(dx=0.5, gripper=1))[0]
        np.testing.assert_array_equal(step_a["state"], step_b["state"])
    finally:
        first.close()
        second.close()


def assert_spread_over_the_range(positions: np.ndarray, nominal, half_range: float) -> None:
    assert np.all(np.abs(positions - np.asarray(nominal)) <= half_range + 1e-4)
    assert len({tuple(p.round(5)) for p in positions}) == len(positions)  # all different
    assert np.ptp(positions, axis=0).min() > 0.6 * half_range  # spread over most of the range


@pytest.mark.parametrize("task", TASKS)
def test_different_seeds_place_the_object_within_the_randomisation_range(task):
    env = SimRobotEnv(task=task, render_images=False)
    positions = []
    for seed in range(12):
        env.reset(seed=seed)
        positions.append(env.privileged_state()[OBJECT_KEY[task]][:2])
    assert_spread_over_the_range(np.array(positions), env.task.nominal_xy, env.task.xy_range)


def test_hang_ring_starts_with_the_ring_held_by_its_knob_at_random_yaws():
    env = SimRobotEnv(task="hang_ring", render_images=False)
    task, yaws = env.task, []
    for seed in range(12):
        obs, _ = env.reset(seed=seed)
        start = env.privileged_state()
        assert start["ring_grasped"] and obs["state"][state_slice("gripper")][0] < 0.5, seed  # closed on the knob
        assert np.linalg.norm(start["knob_grasp_pos"] - start["tcp_pos"]) < 2 * task.grasp_range, seed
        assert start["ring_normal"][2] > 0.99, seed  # hanging level off the knob
        knob_direction = start["knob_grasp_pos"][:2] - start["ring_pos"][:2]
        yaws.append(np.arctan2(knob_direction[1], knob_direction[0]))
        for _ in range(5):
            env.step(action(gripper=1))
        held = env.privileged_state()
        assert held["ring_grasped"] and abs(held["ring_pos"][2] - start["ring_pos"][2]) < 0.003, seed
    assert np.all(np.abs(yaws) <= task.ring_yaw_range + 0.02) and np.ptp(yaws) > task.ring_yaw_range
    env.step(action(gripper=-1))
    env.step(action(gripper=-1))
    dropped = env.privileged_state()
    assert not dropped["ring_grasped"] and dropped["ring_pos"][2] < held["ring_pos"][2] - 0.02  # it falls


def place_ring(env, xyz, tilt_about_x: float = 0.0) -> bool:
    """Put the ring (not held) at `xyz` tilted about x, and say whether that counts as success."""
    quat = np.array([np.cos(tilt_about_x / 2), np.sin(tilt_about_x / 2), 0.0, 0.0])
    env.data.joint("ring_free").qpos[:] = [*xyz, *quat]
    mujoco.mj_forward(env.model, env.data)
    return env.task.is_success(env.model, env.data)


def test_hang_ring_success_needs_the_ring_down_the_post_and_released():
    env = SimRobotEnv(task="hang_ring", render_images=False)
    env.reset(seed=2)
    task, post_top = env.task, env.privileged_state()["post_top_pos"]
    post_axis = lambda z: np.array([post_top[0], post_top[1], z])
    assert place_ring(env, post_axis(0.01))  # resting on the base around the post
    assert place_ring(env, post_axis(post_top[2] - task.success_depth - 0.001))
    assert not place_ring(env, post_axis(post_top[2] - task.success_depth + 0.003))  # not down far enough
    assert not place_ring(env, post_axis(post_top[2] + 0.01))  # above the post
    assert place_ring(env, post_axis(0.03) + [0.005, 0.0, 0.0], tilt_about_x=0.3)  # tilted, still around it
    beside = post_axis(0.01) + [0.0, task.ring_radius + task.tube_radius + task.post_radius + 0.002, 0.0]
    assert not place_ring(env, beside)
    on_edge = post_axis(0.04) + [0.0, task.tube_radius + task.post_radius + 0.001, 0.0]
    assert not place_ring(env, on_edge, tilt_about_x=np.pi / 2)  # standing on edge against the post

    env.reset(seed=2)  # the noise-free operator lowers the ring down the post: no success while it holds it
    operator = ScriptedOperator(env, seed=0, knobs=OperatorKnobs.noise_free())
    operator.reset()
    def held_down_the_post(s):
        around = np.linalg.norm(s["ring_pos"][:2] - s["post_top_pos"][:2]) < task.inner_radius - task.post_radius
        return s["ring_grasped"] and around and s["post_top_pos"][2] - s["ring_pos"][2] > task.success_depth

    while not held_down_the_post(env.privileged_state()):
        assert not env.step(operator.poll().action)[2]
    assert not task.is_success(env.model, env.data)
    for _ in range(8):  # the operator lowers it a little further and lets go
        _, reward, terminated, _, info = env.step(operator.poll().action)
        if terminated:
            break
    assert terminated and reward == 1.0 and info[INFO_SUCCESS] and not env.privileged_state()["ring_grasped"]


@pytest.mark.parametrize("axis", range(3))
@pytest.mark.parametrize("sign", (1.0, -1.0))
def test_translation_moves_the_tcp_by_the_action_scale(fast_env, axis, sign):
    start = tcp(fast_env.reset(seed=0)[0])
    components = {("dx", "dy", "dz")[axis]: sign, "gripper": -1}
    fast_env.step(action(**components))
    end = tcp(fast_env.step(action(gripper=-1))[0])  # one still step: the compliant hand catches up
    expected = np.zeros(3)
    expected[axis] = sign * POS_SCALE  # full deflection = 2 cm
    np.testing.assert_allclose(end - start, expected, atol=0.0025)


def test_half_action_moves_half_as_far_and_rotation_follows_the_action(fast_env):
    start = tcp(fast_env.reset(seed=0)[0])
    for _ in range(2):
        fast_env.step(action(dy=0.5, gripper=-1))
    end = tcp(fast_env.step(action(gripper=-1))[0])
    np.testing.assert_allclose(end - start, [0.0, 2 * 0.5 * POS_SCALE, 0.0], atol=0.0025)
    fast_env.step(action(drz=1.0, gripper=-1))
    obs = fast_env.step(action(gripper=-1))[0]
    np.testing.assert_allclose(obs["state"][state_slice("tcp_euler")], [0.0, 0.0, ROT_SCALE], atol=0.01)


def test_gripper_closes_and_opens(fast_env):
    obs, _ = fast_env.reset(seed=0)
    assert obs["state"][state_slice("gripper")][0] > 0.95  # starts open
    for command, check in ((1.0, lambda g: g < 0.05), (-1.0, lambda g: g > 0.95), (0.0, lambda g: 0.4 < g < 0.6)):
        for _ in range(2):
            obs = fast_env.step(action(gripper=command))[0]
        assert check(obs["state"][state_slice("gripper")][0]), command


def test_time_limit_truncates_without_terminating():
    env = SimRobotEnv(task="pick_cube", render_images=False, max_episode_steps=5)
    env.reset(seed=0)
    results = [env.step(action(gripper=-1))[1:] for _ in range(5)]
    assert [r[2] for r in results] == [False] * 4 + [True]  # truncated on the 5th step only
    assert not any(r[1] for r in results) and all(r[0] == 0.0 for r in results)
    assert not any(r[3][INFO_SUCCESS] for r in results)


def test_success_gives_reward_one_terminated_and_info_success():
    env = SimRobotEnv(task="insert_peg", render_images=False)
    env.reset(seed=3)
    rewards, results = [], None
    for _ in range(40):  # servo the peg tip over the hole, then straight down
        priv = env.privileged_state()
        goal = priv["hole_top_pos"] + [0.0, 0.0, 0.01]
        error = goal - priv["peg_tip_pos"]
        if np.linalg.norm(error[:2]) < 0.001 and error[2] > -0.005:
            error[2] = -0.02
        results = env.step(np.append(np.clip(error / POS_SCALE * 0.8, -1, 1), [0, 0, 0, 1]))
        rewards.append(results[1])
        if results[2] or results[3]:
            break
    obs, reward, terminated, truncated, info = results
    assert terminated and not truncated and reward == 1.0 and info[INFO_SUCCESS] is True
    assert sum(rewards) == 1.0
    depth = env.privileged_state()["hole_top_pos"][2] - env.privileged_state()["peg_tip_pos"][2]
    assert depth >= env.task.success_depth


def test_force_torque_is_zero_at_rest_and_responds_to_contact():
    env = SimRobotEnv(task="insert_peg", render_images=False)
    obs, _ = env.reset(seed=0)
    assert np.abs(obs["state"][state_slice("force")]).max() < 0.5
    for height in (0.03, -0.02):  # above a point of the fixture top 2.5 cm beside the hole, then press
        for _ in range(15):
            priv = env.privileged_state()
            error = priv["hole_top_pos"] + [0.025, 0.0, height] - priv["peg_tip_pos"]
            obs = env.step(np.append(np.clip(error / POS_SCALE, -1, 1), [0, 0, 0, 1]))[0]
    force = obs["state"][state_slice("force")]
    assert 10.0 < abs(force[2]) < 150.0  # a clear but bounded push
    priv = env.privileged_state()
    assert abs(priv["peg_tip_pos"][2] - priv["hole_top_pos"][2]) < 0.002  # resting on the top, no tunnelling


@pytest.mark.parametrize("bad, match", [
    (np.zeros(6), "shape"),
    (np.zeros((1, 7)), "shape"),
    (np.array([0, 0, np.nan, 0, 0, 0, 0]), "NaN"),
    (np.array([0, 0, 0, np.inf, 0, 0, 0]), "Inf"),
])
def test_bad_actions_raise_value_error(fast_env, bad, match):
    fast_env.reset(seed=0)
    with pytest.raises(ValueError, match=match):
        fast_env.step(bad)


def test_actions_outside_the_box_are_clipped():
    a, b = SimRobotEnv(task="pick_cube", render_images=False), SimRobotEnv(task="pick_cube", render_images=False)
    a.reset(seed=1)
    b.reset(seed=1)
    big = a.step(np.array([5.0, -3.0, 2.0, 0, 0, 0, 9.0]))[0]
    unit = b.step(np.array([1.0, -1.0, 1.0, 0, 0, 0, 1.0]))[0]
    np.testing.assert_array_equal(big["state"], unit["state"])


@pytest.mark.parametrize("task", TASKS)
def test_both_cameras_render_a_real_scene(task):
    env = SimRobotEnv(task=task)
    try:
        obs, _ = env.reset(seed=0)
        front, wrist = obs["image_front"], obs["image_wrist"]
        for image in (front, wrist):
            assert image.std() > 10 and len(np.unique(image.reshape(-1, 3), axis=0)) > 5
        assert not np.array_equal(front, wrist)
        np.testing.assert_array_equal(env.render(), front)
        moved = env.step(action(dx=1, dz=-1, gripper=-1))[0]
        assert not np.array_equal(moved["image_front"], front)  # the hand moved in view
    finally:
        env.close()


def test_wrist_camera_sees_the_red_cube_when_above_it():
    env = SimRobotEnv(task="pick_cube", image_size=64)
    try:
        env.reset(seed=0)
        for _ in range(8):
            priv = env.privileged_state()
            error = priv["cube_pos"] + [0.0, 0.0, 0.08] - priv["tcp_pos"]
            obs = env.step(np.append(np.clip(error / POS_SCALE, -1, 1), [0, 0, 0, -1]))[0]
        image = obs["image_wrist"].astype(int)
        red = (image[..., 0] > 150) & (image[..., 1] < 80) & (image[..., 2] < 80)
        assert red.mean() > 0.01  # the 4 cm cube covers ~2% of the image from 8 cm above
    finally:
        env.close()


def test_image_size_is_configurable_and_fast_mode_gives_zero_images():
    env = make_env("sim:pick_cube", image_size=(48, 80))
    try:
        assert env.unwrapped.robot_spec.cameras == {"front": (48, 80), "wrist": (48, 80)}
        obs, _ = env.reset(seed=0)
        assert obs["image_front"].shape == obs["image_wrist"].shape == (48, 80, 3)
        assert env.observation_space.contains(obs) and obs["image_front"].std() > 10
    finally:
        env.close()
    square = SimRobotEnv(task="pick_cube", image_size=32, render_images=False)
    obs, _ = square.reset(seed=0)
    assert square.observation_space.contains(obs)
    assert obs["image_front"].shape == (32, 32, 3) and not obs["image_front"].any() and not obs["image_wrist"].any()

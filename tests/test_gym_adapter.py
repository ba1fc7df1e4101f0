"""The Gymnasium adapter on a lab's own env registered here: dict observation with two differently
named and sized images and an `agent_pos`, a 4-d Box action with its own bounds, info
`is_success`. Contract, action rescaling, named errors, success mapping, and recording through
`tools/record_demos.py` unchanged, then conversion to RLDS."""

import dataclasses
import textwrap

import gymnasium as gym
import numpy as np
import pytest
from conftest import LiftingOperator

from vlarft.datasets.raw_episodes import list_raw_episodes, read_raw_episode
from vlarft.datasets.reader import iterate_episodes
from vlarft.pipelines.convert_demos import convert
from vlarft.robot_io.cameras import resize
from vlarft.robot_io.contract import STATE_DIM, state_slice
from vlarft.robot_io.factory import make_env
from vlarft.robot_io.gym_adapter import GymAdapterEnv, GymAdapterError, load_gym_config
from vlarft.tools import record_demos

LOW = np.array([-0.05, -0.05, -0.05, 0.0], np.float32)
HIGH = np.array([0.05, 0.05, 0.05, 1.0], np.float32)


class LabLiftEnv(gym.Env):
    """A point 'gripper' that must be lifted above z = 0.12; action (dx, dy, dz, close 0..1)."""

    def __init__(self, observe_list=False):
        self.observation_space = gym.spaces.Dict({
            "cams": gym.spaces.Dict({"overhead": gym.spaces.Box(0, 255, (48, 64, 3), np.uint8)}),
            "wrist_rgb": gym.spaces.Box(0, 255, (24, 24, 3), np.uint8),
            "agent_pos": gym.spaces.Box(-1, 1, (5,), np.float32),  # x y z, width 0..0.08, effort
            "target": gym.spaces.Box(-1, 1, (3,), np.float32),
        })
        self.action_space = gym.spaces.Box(LOW, HIGH, dtype=np.float32)
        self.observe_list = observe_list
        self.last_action = None

    def _obs(self):
        overhead = np.full((48, 64, 3), 40, np.uint8)
        overhead[:, int(32 + 200 * self.pos[0]) % 64] = 250
        wrist = np.full((24, 24, 3), int(100 + 1000 * self.pos[2]) % 256, np.uint8)
        obs = {"cams": {"overhead": overhead}, "wrist_rgb": wrist,
               "agent_pos": np.array([*self.pos, self.width, 0.5], np.float32),
               "target": np.array([0.0, 0.0, 0.1], np.float32)}
        return list(obs.values()) if self.observe_list else obs

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = self.np_random.uniform(-0.05, 0.05, 3).astype(np.float32) * [1, 1, 0]
        self.width = 0.08
        return self._obs(), {"is_success": False}

    def step(self, action):
        self.last_action = np.array(action)
        self.pos = np.clip(self.pos + action[:3], -1, 1).astype(np.float32)
        self.width = 0.08 * (1.0 - float(action[3]))
        success = bool(self.pos[2] > 0.12)
        return self._obs(), 5.0 * float(self.pos[2]), success, False, {"is_success": success}


class DiscreteEnv(LabLiftEnv):
    def __init__(self):
        super().__init__()
        self.action_space = gym.spaces.Discrete(3)


for env_id, entry in (("vlarft_test/LabLift-v0", LabLiftEnv), ("vlarft_test/Discrete-v0", DiscreteEnv)):
    if env_id not in gym.registry:
        gym.register(id=env_id, entry_point=entry, max_episode_steps=12)

CONFIG = """\
env_id = "vlarft_test/LabLift-v0"
instruction = "lift the gripper"
robot = "lab_arm"
image_size = [32, 32]
action_index = [0, 1, 2, 6]
success_key = "is_success"
control_hz = 5.0

[images]
front = "cams/overhead"
wrist = "wrist_rgb"

[state]
tcp_pos = "agent_pos[0:3]"
gripper = { key = "agent_pos[3]", scale = 12.5 }
"""


def write_config(tmp_path, text=CONFIG, name="lab_lift.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def edited(old, new):
    assert old in CONFIG
    return CONFIG.replace(old, new)


def test_observations_follow_the_contract(tmp_path):
    env = make_env(f"gym:{write_config(tmp_path)}")
    raw_env = gym.make("vlarft_test/LabLift-v0")
    try:
        spec = env.unwrapped.robot_spec
        assert (spec.robot, spec.task, spec.instruction) == ("lab_arm", "LabLift_v0", "lift the gripper")
        assert spec.cameras == {"front": (32, 32), "wrist": (32, 32)}
        assert (spec.state_dim, spec.action_dim, spec.control_hz, spec.max_episode_steps) == (STATE_DIM, 7, 5.0, 12)
        obs, info = env.reset(seed=3)
        raw, _ = raw_env.reset(seed=3)
        assert env.observation_space.contains(obs) and info["success"] is False
        assert np.array_equal(obs["image_front"], resize(raw["cams"]["overhead"], (32, 32)))
        assert np.array_equal(obs["image_wrist"], resize(raw["wrist_rgb"], (32, 32)))
        state = obs["state"]
        assert np.allclose(state[state_slice("tcp_pos")], raw["agent_pos"][:3])
        assert np.allclose(state[state_slice("gripper")], [1.0])  # width 0.08 * 12.5 = fully open
        untouched = np.ones(STATE_DIM, bool)
        untouched[state_slice("tcp_pos")] = untouched[state_slice("gripper")] = False
        assert not state[untouched].any()
        obs, reward, terminated, truncated, info = env.step(np.zeros(7, np.float32))
        assert env.observation_space.contains(obs) and env.action_space.shape == (7,)
        assert (reward, terminated, truncated, info["success"]) == (0.0, False, False, False)
    finally:
        env.close()
        raw_env.close()


def test_action_rescaling_hand_computed(tmp_path):
    env = make_env(f"gym:{write_config(tmp_path)}")
    try:
        env.reset(seed=0)
        ours = np.array([0.5, -1.0, 0.0, 0.9, 0.9, 0.9, 2.0], np.float32)  # rotations unused, gripper clipped
        want = [-0.05 + 0.75 * 0.1, -0.05, 0.0, 1.0]
        assert np.allclose(env.to_env_action(ours), want)
        env.step(ours)
        inner = env.env.unwrapped.last_action
        assert inner.dtype == np.float32 and np.allclose(inner, want)
        with pytest.raises(ValueError, match=r"shape \(7,\)"):
            env.to_env_action(np.zeros(4))
    finally:
        env.close()
    flipped = GymAdapterEnv(dataclasses.replace(load_gym_config(write_config(tmp_path)),
                                                action_low=(-0.01, -0.01, -0.01, 1.0), action_high=(0.01, 0.01, 0.01, 0.0)))
    try:  # overridden bounds; a swapped low/high pair flips the gripper axis
        assert np.allclose(flipped.to_env_action([1, 0, -1, 0, 0, 0, 1]), [0.01, 0.0, -0.01, 0.0])
        assert np.allclose(flipped.to_env_action([0, 0, 0, 0, 0, 0, -0.5]), [0, 0, 0, 0.75])
    finally:
        flipped.close()


def test_success_ends_the_episode_with_a_sparse_reward(tmp_path):
    env = make_env(f"gym:{write_config(tmp_path)}")
    try:
        env.reset(seed=0)
        lift = np.array([0, 0, 1, 0, 0, 0, -1], np.float32)  # +0.05 m per step
        results = [env.step(lift) for _ in range(3)]
        assert [r[1:4] for r in results] == [(0.0, False, False), (0.0, False, False), (1.0, True, False)]
        assert [r[4]["success"] for r in results] == [False, False, True]
        env.reset(seed=0)
        for step in range(12):  # holding still: the time limit truncates, never terminates
            _, reward, terminated, truncated, info = env.step(np.zeros(7, np.float32))
        assert (reward, terminated, truncated, info["success"]) == (0.0, False, True, False)
    finally:
        env.close()
    text = edited('success_key = "is_success"', "success_reward_threshold = 0.4\nsparse_reward = false")
    by_reward = make_env(f"gym:{write_config(tmp_path, text)}")
    try:  # success = reward > 0.4, i.e. z > 0.08; the env's own (dense) reward is kept
        by_reward.reset(seed=0)
        rewards = [by_reward.step(np.array([0, 0, 1, 0, 0, 0, -1], np.float32)) for _ in range(2)]
        assert np.allclose([r[1] for r in rewards], [0.25, 0.5])
        assert [(r[2], r[4]["success"]) for r in rewards] == [(False, False), (True, True)]
    finally:
        by_reward.close()


def test_state_keys_keep_the_envs_own_state(tmp_path):
    text = CONFIG.split("[state]")[0].replace("[images]", 'state_keys = ["agent_pos", "target[2]"]\n\n[images]')
    env = make_env(f"gym:{write_config(tmp_path, text)}")
    try:
        assert env.unwrapped.robot_spec.state_dim == 6
        obs, _ = env.reset(seed=1)
        assert env.observation_space.contains(obs)
        assert np.allclose(obs["state"][3:], [0.08, 0.5, 0.1])
    finally:
        env.close()


@pytest.mark.parametrize("old, new, message", [
    ('"cams/overhead"', '"cams/front"', r"observation space \(images.front\) has no key 'cams/front'; "
                                        r"available: \['agent_pos', 'cams/overhead', 'target', 'wrist_rgb'\]"),
    ('"agent_pos[0:3]"', '"agent_pos[0:2]"',
     r"state tcp_pos = 'agent_pos\[0:2\]' selects 2 value\(s\), STATE_LAYOUT 'tcp_pos' has 3"),
    ('tcp_pos =', 'tcp_position =', r"'state.tcp_position' is not a STATE_LAYOUT component"),
    ('action_index = [0, 1, 2, 6]\n', '', r"its action has 4 dimension\(s\); 'action_index' must give 4 indices"),
    ('action_index = [0, 1, 2, 6]', 'action_index = [0, 1, 2, 7]', r"'action_index' entries must be in 0..6"),
    ('"vlarft_test/LabLift-v0"', '"vlarft_test/Discrete-v0"', r"needs a 1-D Box action space, got Discrete\(3\)"),
    ('"vlarft_test/LabLift-v0"', '"vlarft_test/NoSuchEnv-v0"', r"cannot make gymnasium env 'vlarft_test/NoSuchEnv-v0'"),
    ('"wrist_rgb"', '"agent_pos"', r"images.wrist = 'agent_pos' is Box.*not a uint8 HxWx3 image"),
    ('robot = "lab_arm"', 'robots = "lab_arm"', r"lab_lift.toml: unknown key 'robots'; known: \["),
    ('instruction = "lift the gripper"\n', '', r"lab_lift.toml: missing key 'instruction'"),
    ('image_size = [32, 32]', 'image_size = "big"', r"lab_lift.toml: key 'image_size' must be a list of int, got 'big'"),
    ('[state]', '[state\n', r"lab_lift.toml: not valid TOML"),
])
def test_config_and_key_errors_name_the_key(tmp_path, old, new, message):
    with pytest.raises(GymAdapterError, match=message):
        make_env(f"gym:{write_config(tmp_path, edited(old, new))}")


def test_runtime_errors_name_the_key(tmp_path):
    text = edited('success_key = "is_success"', 'success_key = "succeeded"')
    env = make_env(f"gym:{write_config(tmp_path, text)}")
    try:
        env.reset(seed=0)
        with pytest.raises(GymAdapterError, match=r"step info has no key 'succeeded'; available: \['is_success'"):
            env.step(np.zeros(7, np.float32))
    finally:
        env.close()
    config = load_gym_config(write_config(tmp_path))
    with pytest.raises(GymAdapterError, match="has no time limit: set 'max_episode_steps'"):
        GymAdapterEnv(config, env=LabLiftEnv())  # an env instance, not made from the registry
    listed = GymAdapterEnv(dataclasses.replace(config, max_episode_steps=5), env=LabLiftEnv(observe_list=True))
    try:
        with pytest.raises(GymAdapterError, match="returned a list observation, not a dict"):
            listed.reset(seed=0)
    finally:
        listed.close()
    with pytest.raises(GymAdapterError, match="no such gym adapter config file"):
        make_env(f"gym:{tmp_path / 'missing.toml'}")
    with pytest.raises(ValueError, match=r"gym:<path/to/adapter.toml>"):
        make_env("gym:")


def test_record_demos_records_and_converts_unchanged(tmp_path, monkeypatch):
    path = write_config(tmp_path)
    monkeypatch.setattr(record_demos, "make_device_for", lambda name, env, seed: LiftingOperator())
    out = tmp_path / "raw"
    summary = record_demos.record(f"gym:{path}", "lab_operator", 2, str(out), seed=5, progress=False, realtime=False)
    assert summary.kept == 2 and summary.successes == 2
    files = list_raw_episodes(out)
    assert [p.name for p in files] == ["LabLift_v0_000000.npz", "LabLift_v0_000001.npz"]
    for file in files:
        episode, spec = read_raw_episode(file)
        assert spec.cameras == {"front": (32, 32), "wrist": (32, 32)} and spec.state_dim == STATE_DIM
        meta, steps = episode["episode_metadata"], episode["steps"]
        assert meta["robot"] == "lab_arm" and meta["task"] == "LabLift_v0" and meta["success"]
        assert steps["is_terminal"][-1] and steps["intervention"][:-1].all() and len(steps["reward"]) == 4
        assert np.allclose(steps["action"][:-1], [0, 0, 1, 0, 0, 0, 1])
        assert np.allclose(steps["observation"]["state"][-1, state_slice("gripper")], 0.0)  # closed
    result = convert([str(out)], str(tmp_path / "data"), "lab_lift", validation_fraction=0.5, log=lambda m: None)
    assert result.episodes == {"train": 1, "validation": 1}
    episode = next(iterate_episodes(result.dataset_dir, "train"))
    assert episode["steps"]["observation"]["image_front"].shape == (4, 32, 32, 3)

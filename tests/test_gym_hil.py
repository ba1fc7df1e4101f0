"""gym-hil (LeRobot's HIL-SERL MuJoCo Franka envs) through the bundled adapter `gym:gym_hil_pick_cube`:
the contract, recording through `tools/record_demos.py`, conversion with the Beam job, the dataset
read back. gym-hil runs ~1 step/s with images on 2 cores, so episodes are 3 short steps long."""

import numpy as np
import pytest
from conftest import LiftingOperator

from vlarft.datasets.reader import iterate_episodes
from vlarft.pipelines.convert_demos import convert
from vlarft.robot_io.contract import STATE_DIM, state_slice
from vlarft.robot_io.factory import list_envs, make_env
from vlarft.robot_io.gym_adapter import ADAPTERS_DIR
from vlarft.tools import record_demos

pytest.importorskip("gym_hil")
STEPS = 3


def short_adapter(tmp_path):
    """The bundled adapter with 3-step episodes, 32 px images and 10 physics substeps a step
    instead of 50 (gym-hil's operational-space control runs in Python every substep)."""
    text = (ADAPTERS_DIR / "gym_hil_pick_cube.toml").read_text()
    for old, new in (("max_episode_steps = 100", f"max_episode_steps = {STEPS}"),
                     ("image_size = [128, 128]", "image_size = [32, 32]"),
                     ("image_obs = true", "image_obs = true\ncontrol_dt = 0.02")):
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "gym_hil_short.toml"
    path.write_text(text)
    return path


def test_bundled_adapter_follows_the_contract():
    assert "gym:gym_hil_pick_cube" in list_envs()
    env = make_env("gym:gym_hil_pick_cube")
    try:
        observation, _ = env.reset(seed=0)
        assert observation["image_front"].shape == observation["image_wrist"].shape == (128, 128, 3)
        assert observation["state"].shape == (STATE_DIM,) and observation["state"].dtype == np.float32
        assert observation["state"][state_slice("gripper")][0] == pytest.approx(1.0)  # open at the start
        raw = env.unwrapped.env.unwrapped  # gym-hil's own env
        start = raw._data.mocap_pos[0].copy()
        observation, reward, terminated, truncated, info = env.step(np.array([0, 0, 1, 0, 0, 0, -1], np.float32))
        assert "success" in info and info["success"] is False and reward == 0.0
        assert raw._data.mocap_pos[0][2] - start[2] == pytest.approx(0.02, abs=1e-6)  # our +1 z = their +2 cm
        assert env.observation_space.contains(observation)
    finally:
        env.close()


def test_record_and_convert_through_gym_hil(tmp_path, monkeypatch):
    monkeypatch.setattr(record_demos, "make_device_for", lambda name, env, seed: LiftingOperator())
    out = tmp_path / "raw"
    summary = record_demos.record(f"gym:{short_adapter(tmp_path)}", "lifting", 2, str(out), seed=1,
                                  keep_failures=True, progress=False, realtime=False)
    assert summary.kept == 2 and summary.successes == 0  # lifting empty-handed never picks the cube
    result = convert([str(out)], str(tmp_path / "data"), "gym_hil_pick", validation_fraction=0.5,
                     log=lambda m: None)
    assert result.episodes == {"train": 1, "validation": 1} and not result.dead_letters
    episode = next(iterate_episodes(result.dataset_dir, "train"))
    steps = episode["steps"]
    assert steps["observation"]["image_front"].shape == (STEPS + 1, 32, 32, 3)
    assert np.allclose(steps["action"][:-1], [0, 0, 1, 0, 0, 0, 1]) and steps["intervention"][:-1].all()
    tcp_z = steps["observation"]["state"][:, state_slice("tcp_pos")][:, 2]
    assert tcp_z[-1] > tcp_z[0] + 0.005  # the arm went up
    assert not steps["is_terminal"].any() and steps["is_last"][-1]  # a time-limit end, not success

"""Recording on the real simulator: record -> convert -> read back, operator buttons, Ctrl-C."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from vlarft.datasets.raw_episodes import list_raw_episodes, read_raw_episode
from vlarft.datasets.reader import iterate_episodes
from vlarft.datasets.schema import EpisodeSpec, flatten
from vlarft.datasets.episode_builder import EpisodeBuilder
from vlarft.pipelines.convert_demos import convert
from vlarft.robot_io.factory import make_env
from vlarft.robot_io.intervention import InterventionWrapper
from vlarft.robot_io.teleop.base import RERECORD, SUCCESS, TeleopCommand
from vlarft.tools.record_demos import record, record_episode

REPO = Path(__file__).resolve().parents[1]


def test_record_convert_read_back_round_trip(tmp_path):
    summary = record("sim:pick_cube", "scripted", 3, str(tmp_path / "raw"), seed=3, image_size=64, progress=False)
    assert summary.kept == 3 and len(summary.files) == 3
    raw = {}
    for path in list_raw_episodes(tmp_path / "raw"):
        episode, spec = read_raw_episode(path)
        assert spec == EpisodeSpec(cameras={"front": (64, 64), "wrist": (64, 64)})
        meta = episode["episode_metadata"]
        assert meta["success"] and meta["task"] == "pick_cube" and meta["source"] == "demo"
        assert meta["operator"] == "scripted" and meta["file_path"] == str(path)
        steps = episode["steps"]
        assert steps["is_terminal"][-1] and steps["reward"][-2] == 1.0 and steps["reward"].sum() == 1.0
        assert steps["intervention"][:-1].all()  # the scripted operator drove every step
        raw[meta["episode_id"]] = episode
    result = convert([str(tmp_path / "raw")], str(tmp_path / "data"), "sim_pick", validation_fraction=0.34,
                     log=lambda m: None)
    assert result.episodes == {"train": 2, "validation": 1}
    seen = 0
    for split in ("train", "validation"):
        for episode in iterate_episodes(result.dataset_dir, split):
            want = raw[episode["episode_metadata"]["episode_id"]]
            w, g = flatten(want["steps"]), flatten(episode["steps"])
            assert set(w) == set(g)
            for key in w:
                if key.startswith("observation/image_"):
                    diff = np.abs(w[key].astype(int) - g[key].astype(int))
                    assert diff.mean() < 3, (key, diff.mean())  # JPEG tolerance on rendered frames
                elif key == "language_instruction":
                    assert list(w[key]) == list(g[key])
                else:
                    assert np.array_equal(w[key], g[key]), key
            seen += 1
    assert seen == 3


class ScriptedHuman:
    """A TeleopDevice that presses given buttons at given steps and otherwise stays idle."""

    def __init__(self, presses):
        self.presses, self.step = presses, 0

    def reset(self):
        self.step = 0

    def poll(self):
        buttons = frozenset(self.presses.get(self.step, ()))
        self.step += 1
        return TeleopCommand(action=np.zeros(7, np.float32), engaged=False, buttons=buttons)

    def close(self):
        pass


def make_builder(env):
    spec = env.unwrapped.robot_spec
    return EpisodeBuilder(EpisodeSpec.from_robot_spec(spec), episode_id="b", task=spec.task,
                          instruction=spec.instruction)


def test_operator_marks_success_rerecord_and_time_limit():
    env = make_env("sim:insert_peg", image_size=32)
    try:
        wrapped = InterventionWrapper(env, ScriptedHuman({4: [SUCCESS]}))
        outcome = record_episode(wrapped, make_builder(env), seed=0)
        assert outcome.success and outcome.length == 5
        assert outcome.episode["steps"]["is_terminal"][-1] and outcome.episode["steps"]["reward"][4] == 1.0
        assert not outcome.episode["steps"]["intervention"].any()  # the idle human never acted

        wrapped = InterventionWrapper(env, ScriptedHuman({2: [RERECORD]}))
        assert record_episode(wrapped, make_builder(env), seed=0).episode is None

        wrapped = InterventionWrapper(env, ScriptedHuman({}))
        outcome = record_episode(wrapped, make_builder(env), seed=0)
        steps = outcome.episode["steps"]
        assert not outcome.success and outcome.length == env.unwrapped.robot_spec.max_episode_steps
        assert steps["is_last"][-1] and not steps["is_terminal"].any() and steps["discount"].min() == 1.0
    finally:
        env.close()


def test_cli_and_ctrl_c_keeps_finished_episodes(tmp_path):
    out = tmp_path / "demos"
    cmd = [sys.executable, str(REPO / "tools" / "record_demos.py"), "--env=sim:pick_cube", "--teleop=scripted",
           "--episodes=2", f"--out_dir={out}", "--image_size=32", "--no_progress"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["kept"] == 2 and summary["success_rate"] > 0 and len(list_raw_episodes(out)) == 2

    interrupted = tmp_path / "interrupted"
    proc = subprocess.Popen(cmd[:-4] + ["--episodes=50", f"--out_dir={interrupted}", "--image_size=32", "--no_progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and len(list_raw_episodes(interrupted) if interrupted.exists() else []) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    files = list_raw_episodes(interrupted)
    assert len(files) >= 2
    for path in files:  # every file on disk is a whole, valid episode
        episode, _ = read_raw_episode(path)
        assert episode["episode_metadata"]["success"]
    assert not [p for p in interrupted.iterdir() if p.name.startswith(".")]


def test_operator_outcome_hand_cases():
    from vlarft.robot_io.intervention import operator_outcome
    from vlarft.robot_io.teleop.base import END_EPISODE, FAILURE

    plain = operator_outcome(0.0, False, False, {"success": False, "buttons": frozenset()})
    assert (plain.reward, plain.terminated, plain.truncated, plain.success, plain.rerecord) == (0.0, False, False, False, False)
    marked = operator_outcome(0.0, False, False, {"success": False, "buttons": frozenset({SUCCESS})})
    assert (marked.reward, marked.terminated, marked.success) == (1.0, True, True)
    failed = operator_outcome(0.0, False, False, {"success": False, "buttons": frozenset({FAILURE})})
    assert (failed.reward, failed.terminated, failed.truncated, failed.success) == (0.0, True, False, False)
    env_says = operator_outcome(1.0, True, False, {"success": True, "buttons": frozenset({FAILURE})})
    assert (env_says.reward, env_says.terminated, env_says.success) == (1.0, True, True)  # the env's success stands
    ended = operator_outcome(0.0, False, False, {"success": False, "buttons": frozenset({END_EPISODE})})
    assert (ended.terminated, ended.truncated) == (False, True)
    assert operator_outcome(0.0, False, False, {"buttons": frozenset({RERECORD})}).rerecord

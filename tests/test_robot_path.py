"""A lab's whole path on the real-robot code, from a task TOML alone: SpaceMouse demos on a Franka
with two cameras -> raw episodes -> RLDS dataset -> SFT -> embeddings -> offline Cal-ConRFT ->
online HIL-ConRFT with the same SpaceMouse taking over.

Only the hardware is replaced: the arm by the loopback `FakeFrankaServer` (real HTTP, the HIL-SERL
protocol), the cameras by `kind = "synthetic"`, and the SpaceMouse's `hid` module (hidapi) by a fake
one whose device plays a person watching the arm: after a short look it pushes the cap away from
itself until the arm has moved 2 cm along +x, clicks the left button until the gripper closes, then
presses the button the task TOML maps to SUCCESS. Everything above the `hid` module is real:
`open_spacemouse`, the reader thread, report parsing, the mapping, the intervention wrapper,
`record_demos`, the Beam jobs, Reverb and the JAX learners.
"""

import dataclasses
import logging
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import QUIET, int16le, tiny_config
from vlarft.agents import training
from vlarft.agents.config import loss_preset
from vlarft.agents.online import run_online
from vlarft.datasets.raw_episodes import list_raw_episodes, read_raw_episode
from vlarft.datasets.reader import iterate_episodes
from vlarft.pipelines.convert_demos import convert
from vlarft.pipelines.embed_dataset import embed_dataset
from vlarft.robot_io.contract import STATE_DIM, state_slice
from vlarft.robot_io.franka.fake_server import FakeArmConfig, FakeFrankaServer
from vlarft.tools.record_demos import record

HZ, POS_SCALE, PUSH_M = 50.0, 0.005, 0.02
SUCCESS_BUTTON = 12  # a SpaceMouse Pro button; the task TOML maps it to SUCCESS
PRECISION = {"translational_stiffness": 2000.0, "translational_clip_x": 0.1}
COMPLIANCE = {"translational_stiffness": 2000.0, "translational_clip_x": 0.02}

TASK_TOML = """\
# A lab's task file (the structure of robot_io/tasks/pick_place.toml), pointed at the fake server.
instruction = "push the object forward and grasp it"
server_url = "{url}"

control_hz = {hz}
max_episode_steps = 24
pos_scale = {pos_scale}
rot_scale = 0.05
gripper_threshold = 0.5
action_frame = "reset"
gripper_sleep_s = 0.02

xyz_low = [0.35, -0.20, 0.03]
xyz_high = [0.70, 0.20, 0.35]
euler_low = [2.94159, -0.15, -0.8]
euler_high = [3.34159, 0.15, 0.8]

reset_pose = [0.50, 0.0, 0.25, 3.14159265, 0.0, 0.0]
reset_xy_range = 0.005
reset_z_range = 0.005
reset_yaw_range = 0.1
reset_gripper = "open"
reset_move_s = 0.1
reset_pause_s = 0.02
joint_reset_every = 3

reward_source = "operator"
watchdog_margin_s = 1.0      # generous: this test machine is shared

[[cameras]]
name = "wrist"
kind = "synthetic"
size = [32, 32]
fps = 60
stale_after_s = 2.0

[[cameras]]
name = "front"
kind = "synthetic"
size = [32, 32]
fps = 60
stale_after_s = 2.0

[precision_params]
translational_stiffness = {precision[translational_stiffness]}
translational_clip_x = {precision[translational_clip_x]}

[compliance_params]
translational_stiffness = {compliance[translational_stiffness]}
translational_clip_x = {compliance[translational_clip_x]}

[teleop.spacemouse]
button_events = {{ {button} = "success" }}
"""


REST = (0, 0, 0, 0, 0, 0)
PUSH_AWAY = (0, -350, 0, 0, 0, 0)  # raw HID y = pull towards you: -y full deflection = push away
LEFT = 1 << 0  # closes the gripper (SpaceMouseConfig.close_button)


class WatchingHand:
    """The person at the SpaceMouse, as the HID device they hold: every read looks at the arm
    (`server.snapshot()`) and sends a report when what the hand does changes.

    Per episode (a new one starts when the reset has put the arm in compliance mode): look for
    `watch_s`, push the cap away until the arm moved PUSH_M along +x, hold the left button until
    the gripper is commanded closed, then press SUCCESS_BUTTON and rest until the next reset.
    `pushes` / `clicks` count the reports that started a push / a left click.
    """

    def __init__(self, server, watch_s):
        self.server, self.watch_s = server, watch_s
        self.phase, self.t0, self.x0 = "reset", 0.0, 0.0
        self.axes, self.buttons, self.pending = REST, 0, []
        self.episodes = self.pushes = self.clicks = self.successes = 0
        self.closed = False
        self.lock = threading.Lock()

    # --- hid.device ---------------------------------------------------------------------------
    def open_path(self, path):
        assert path == b"/dev/hidraw7"

    def read(self, size, timeout_ms):
        if self.closed:
            raise OSError("device closed")
        with self.lock:
            if not self.pending:
                time.sleep(0.004)  # a real device reports at a few hundred Hz
                self._emit(*self._decide())
            return self.pending.pop(0) if self.pending else []

    def close(self):
        self.closed = True

    # --- the person ---------------------------------------------------------------------------
    def _emit(self, axes, buttons):
        if axes != self.axes:
            self.pushes += axes == PUSH_AWAY
            self.pending.append([1] + int16le(*axes))  # 13-byte report: translation + rotation
            self.axes = axes
        if buttons != self.buttons:
            self.clicks += bool(buttons & LEFT and not self.buttons & LEFT)
            self.successes += bool(buttons >> SUCCESS_BUTTON & 1)
            self.pending.append([3] + list(buttons.to_bytes(4, "little")))
            self.buttons = buttons

    def _decide(self):
        arm = self.server.snapshot()
        x, gripper_open = arm["pose"][0], arm["gripper_target"] > 0.5
        if arm["params"] != COMPLIANCE:  # the reset is under way (precision mode)
            self.phase = "reset"
            return REST, 0
        if self.phase == "done" and gripper_open:  # a reset reopened the gripper (we missed its start)
            self.phase = "reset"
        now = time.monotonic()
        if self.phase == "reset":
            self.phase, self.t0 = "watch", now
            self.episodes += 1
        if self.phase == "watch":
            if now - self.t0 < self.watch_s:
                return REST, 0
            self.phase, self.x0 = "push", x
        if self.phase == "push":
            if x < self.x0 + PUSH_M:
                return PUSH_AWAY, 0
            self.phase = "close"
        if self.phase == "close":
            if gripper_open:
                return REST, LEFT
            self.phase = "done"
        return REST, 1 << SUCCESS_BUTTON  # pressed once, held until the next reset


class FakeHidModule:
    """Stands in for the `hid` module (hidapi): one SpaceMouse Pro, played by a `WatchingHand`."""

    def __init__(self, server, watch_s):
        self.server, self.watch_s, self.hands = server, watch_s, []

    def enumerate(self):
        return [{"vendor_id": 0x046D, "product_id": 0xC62B, "path": b"/dev/hidraw7", "usage_page": 1, "usage": 8,
                 "manufacturer_string": "3Dconnexion", "product_string": "SpaceMouse Pro"}]

    def device(self):
        self.hands.append(WatchingHand(self.server, self.watch_s))
        return self.hands[-1]


def test_a_lab_goes_from_a_task_toml_to_online_training(tmp_path, monkeypatch, caplog):
    with FakeFrankaServer(config=FakeArmConfig(max_speed=20.0, max_angular_speed=200.0, gripper_speed=50.0)) as server:
        toml = tmp_path / "lab_pick.toml"
        toml.write_text(TASK_TOML.format(url=server.url, hz=HZ, pos_scale=POS_SCALE, precision=PRECISION,
                                         compliance=COMPLIANCE, button=SUCCESS_BUTTON))
        env_name = f"franka:{toml}"
        hid = FakeHidModule(server, watch_s=0.08)
        caplog.set_level(logging.ERROR, logger="vlarft.robot_io.franka.safety")
        monkeypatch.setitem(sys.modules, "hid", hid)

        # 1-2. Record four demonstrations with the SpaceMouse.
        raw = tmp_path / "raw"
        summary = record(env_name, "spacemouse", 4, str(raw), operator="lab-operator", max_attempts=4,
                         progress=False)
        assert summary.kept == summary.successes == summary.attempts == 4, summary.as_dict()
        hand = hid.hands[0]
        assert hand.closed and hand.episodes == 4 and hand.pushes >= 4 and hand.clicks >= 4
        files = list_raw_episodes(raw)
        assert [Path(f).name for f in files] == [f"lab_pick_{i:06d}.npz" for i in range(4)]
        for path in files:
            episode, spec = read_raw_episode(path)
            meta, steps = episode["episode_metadata"], episode["steps"]
            assert (meta["robot"], meta["task"], meta["operator"], meta["success"]) == (
                "franka", "lab_pick", "lab-operator", True)
            assert spec.cameras == {"wrist": (32, 32), "front": (32, 32)}
            action, human = steps["action"][:-1], steps["intervention"][:-1]
            motion = action[:, :6]
            pushed = human & (motion[:, 0] > 0)
            clicked = human & (action[:, 6] == 1.0) & ~motion.any(axis=1)
            # The cap pushed away = +dx at full deflection, nothing else; the left click closes.
            assert pushed.sum() >= round(PUSH_M / POS_SCALE) - 1, action
            np.testing.assert_allclose(motion[pushed], np.tile([1, 0, 0, 0, 0, 0], (pushed.sum(), 1)), atol=1e-6)
            assert clicked.any() and np.flatnonzero(pushed).max() < np.flatnonzero(clicked).min()
            assert (pushed | clicked)[human].all()  # no other human command was recorded
            assert not motion[~human].any()  # the recorder's "hold still" while the hand only watched
            assert (~human).any()  # the person looked first
            state = steps["observation"]["state"]
            assert state[-1, 0] - state[0, 0] > 0.8 * PUSH_M  # the arm went forward ...
            assert state[-1, state_slice("gripper")][0] < 0.5 < state[0, state_slice("gripper")][0]  # ... and grasped
            assert steps["is_terminal"][-1] and steps["reward"][-2] == 1.0  # SUCCESS ended it
        poses = [np.asarray(r.body["arr"]) for r in server.recorded("pose")]
        assert len(poses) > 40 and max(p[0] for p in poses) > 0.5 + 0.8 * PUSH_M
        assert server.recorded("close_gripper") and server.recorded("jointreset")  # every 3rd reset

        # 3. Convert to RLDS and read it back.
        dataset = convert([str(raw)], str(tmp_path / "data"), "lab_pick", validation_fraction=0.25, log=QUIET)
        episodes = [e for split in ("train", "validation") for e in iterate_episodes(dataset.dataset_dir, split)]
        assert len(episodes) == 4
        for episode in episodes:
            observation = episode["steps"]["observation"]
            assert observation["image_wrist"].shape[1:] == observation["image_front"].shape[1:] == (32, 32, 3)
            assert observation["state"].shape[1] == STATE_DIM == 19
            assert episode["episode_metadata"]["robot"] == "franka"
            assert episode["steps"]["intervention"].any()

        # 4. SFT -> embeddings -> offline -> online, the online actor on the same arm and SpaceMouse.
        config = tiny_config(batch_size=16, log_every=5)
        sft = training.StageOptions(dataset_dir=dataset.dataset_dir, workdir=str(tmp_path / "sft"), steps=20,
                                    eval_episodes=0, show_progress=False)
        assert training.run_sft(sft, config)["learner_steps"] == 20
        embedded = embed_dataset(dataset.dataset_dir, sft.workdir, str(tmp_path / "data"), log=QUIET)
        offline = training.StageOptions(dataset_dir=embedded.dataset_dir, workdir=str(tmp_path / "offline"),
                                        steps=10, eval_episodes=0, show_progress=False)
        assert training.run_offline(offline, config, loss_preset("paper", "offline"))["learner_steps"] == 10

        online = training.StageOptions(dataset_dir="", workdir=str(tmp_path / "online"), steps=0, env=env_name,
                                       eval_episodes=0, init_from=offline.workdir, show_progress=False)
        online_config = dataclasses.replace(config, online=dataclasses.replace(
            config.online, env_steps=30, teleop="spacemouse", min_online=10, publish_every=2, gate="warn"))
        hid.watch_s = 0.1  # online, the person lets the policy act for a few steps first
        requests_before = len(server.recorded("pose"))
        result = run_online(online, online_config, loss_preset("paper", "online"))

    written = result["replay_items_written"]
    assert result["env_steps"] >= 30 and written["online"] == result["env_steps"], result
    online_files = list_raw_episodes(tmp_path / "online" / "episodes")
    assert len(online_files) == result["online_episodes"] >= 1
    human_steps = 0
    for path in online_files:
        episode, spec = read_raw_episode(path)
        steps = episode["steps"]
        assert episode["episode_metadata"]["source"] == "online" and episode["episode_metadata"]["robot"] == "franka"
        assert spec.cameras == {"wrist": (32, 32), "front": (32, 32)}
        human = steps["intervention"][:-1]
        human_steps += int(human.sum())
        pushed = human & (steps["action"][:-1, 0] > 0)
        assert pushed.any() and (~human).any()  # the policy acted, then the person took over
    assert human_steps > 0 and written["demo"] == human_steps  # interventions reached the demo table
    assert 0 < result["intervention_rate"] < 1
    assert result["learner_steps"] > 0
    assert len(hid.hands) == 2 and hid.hands[1].pushes >= 1 and hid.hands[1].closed
    assert len(server.recorded("pose")) > requests_before + 30  # the online actor drove the arm
    # The arm was never stopped for safety: the control loops kept their period throughout.
    assert not [r.getMessage() for r in caplog.records if "safety stop" in r.getMessage()]

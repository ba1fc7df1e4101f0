"""The real-arm stack against the loopback fake Franka server: client, env, safety, factory."""

import dataclasses
import math
import time

import numpy as np
import pytest
from scipy.spatial.transform import Rotation
from vlarft.robot_io.cameras import CameraConfig
from vlarft.robot_io.contract import STATE_DIM, state_slice
from vlarft.robot_io.factory import list_envs, make_env
from vlarft.robot_io.franka.client import FrankaClient, RobotConnectionError
from vlarft.robot_io.franka.env import FrankaEnv
from vlarft.robot_io.franka.fake_server import FakeArmConfig, FakeFrankaServer
from vlarft.robot_io.franka.safety import ControlWatchdog, RobotSafetyStop, WorkspaceBox, validate_action
from vlarft.robot_io.task_config import TaskConfig

PI = math.pi
HZ, MARGIN = 50.0, 0.15
PERIOD = 1.0 / HZ
SLACK = 0.3  # thread scheduling on a loaded test machine; the failures these bounds catch take seconds
CAMERAS = (CameraConfig("wrist", "synthetic", size=(24, 32), fps=60),
           CameraConfig("front", "synthetic", size=(24, 32), fps=60))
# Tool pointing down (roll = pi) and turned by yaw = pi/2: its x axis is the base's +y axis and
# its z axis the base's -z axis.
RESET_POSE = (0.5, 0.0, 0.2, PI, 0.0, PI / 2)


@pytest.fixture
def server():
    with FakeFrankaServer(config=FakeArmConfig(max_speed=20.0, max_angular_speed=200.0, gripper_speed=50.0)) as fake:
        yield fake


def task(server, **overrides) -> TaskConfig:
    base = TaskConfig(
        name="unit", instruction="test the arm", server_url=server.url, cameras=CAMERAS, control_hz=HZ,
        max_episode_steps=50, pos_scale=0.02, rot_scale=0.1, gripper_sleep_s=0.1,
        xyz_low=(0.3, -0.2, 0.05), xyz_high=(0.7, 0.2, 0.4),
        euler_low=(PI - 0.3, -0.3, PI / 2 - 0.5), euler_high=(PI + 0.3, 0.3, PI / 2 + 0.5),
        reset_pose=RESET_POSE, reset_move_s=0.04, reset_pause_s=0.0, watchdog_margin_s=MARGIN,
        precision_params={"translational_stiffness": 3000.0}, compliance_params={"translational_stiffness": 1000.0},
    )
    return dataclasses.replace(base, **overrides)


@pytest.fixture
def make(server):
    envs = []

    def build(**overrides) -> FrankaEnv:
        envs.append(FrankaEnv(task(server, **overrides)))
        return envs[-1]

    yield build
    for env in envs:
        env.close()


def poses_sent(server, since=0.0):
    return [np.array(r.body["arr"]) for r in server.recorded("pose") if r.time >= since]


# --- client ------------------------------------------------------------------------------------


def test_client_reads_match_what_the_server_holds(server):
    client = FrankaClient(server.url)
    client.send_pose([0.45, 0.05, 0.25, 1.0, 0.0, 0.0, 0.0])
    client.close_gripper()
    time.sleep(0.1)  # the fake arm gets there and stops
    state = client.get_state()
    held = server.snapshot()
    for field in ("pose", "q", "jacobian", "force", "torque"):
        np.testing.assert_allclose(getattr(state, field), held[field], atol=1e-9, err_msg=field)
    np.testing.assert_allclose(state.pose, [0.45, 0.05, 0.25, 1.0, 0.0, 0.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(state.euler, [PI, 0.0, 0.0], atol=1e-9)
    assert state.gripper_pos == held["gripper_pos"] == 0.0 and state.jacobian.shape == (6, 7)
    np.testing.assert_allclose(client.get_pose(), held["pose"], atol=1e-9)
    np.testing.assert_allclose(client.get_pose_euler(), [0.45, 0.05, 0.25, PI, 0.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(client.get_vel(), np.zeros(6), atol=1e-9)
    np.testing.assert_allclose(client.get_force(), np.zeros(3))
    np.testing.assert_allclose(client.get_torque(), np.zeros(3))
    np.testing.assert_allclose(client.get_q(), held["q"], atol=1e-9)
    np.testing.assert_allclose(client.get_dq(), np.zeros(7), atol=1e-9)
    np.testing.assert_allclose(client.get_jacobian(), held["jacobian"])
    assert client.get_gripper() == 0.0
    client.close()


def test_client_commands_send_the_protocol_bodies(server):
    client = FrankaClient(server.url)
    server.clear_recorded()
    answers = {
        "pose": client.send_pose(np.array([0.5, 0.0, 0.3, 1.0, 0.0, 0.0, 0.0])),
        "clearerr": client.clear_error(),
        "update_param": client.update_params({"translational_stiffness": 2000, "rotational_damping": 7.0}),
        "set_load": client.set_load(0.5, (0.0, 0.0, 0.05), (0.01, 0, 0, 0, 0.01, 0, 0, 0, 0.01)),
        "close_gripper": client.close_gripper(),
        "close_gripper_slow": client.close_gripper(slow=True),
        "open_gripper": client.open_gripper(),
        "move_gripper": client.move_gripper(255),
        "activate_gripper": client.activate_gripper(),
        "reset_gripper": client.reset_gripper(),
        "stopimp": client.stop_impedance(),
        "startimp": client.start_impedance(),
        "jointreset": client.joint_reset(timeout=5.0),
    }
    assert answers == {
        "pose": "Moved", "clearerr": "Clear", "update_param": "Updated compliance parameters",
        "set_load": "Set Load", "close_gripper": "Closed", "close_gripper_slow": "Closed",
        "open_gripper": "Opened", "move_gripper": "Moved Gripper", "activate_gripper": "Activated",
        "reset_gripper": "Reset", "stopimp": "Stopped impedance", "startimp": "Started impedance",
        "jointreset": "Reset Joint",
    }
    bodies = {r.route: r.body for r in server.recorded()}
    assert list(bodies) == list(answers)  # one request each, in order
    assert bodies["pose"] == {"arr": [0.5, 0.0, 0.3, 1.0, 0.0, 0.0, 0.0]}
    assert bodies["update_param"] == {"translational_stiffness": 2000, "rotational_damping": 7.0}
    assert bodies["set_load"] == {"mass": 0.5, "F_x_center_load": [0.0, 0.0, 0.05],
                                  "load_inertia": [0.01, 0, 0, 0, 0.01, 0, 0, 0, 0.01]}
    assert bodies["move_gripper"] == {"gripper_pos": 255}
    assert all(bodies[r] is None for r in answers if r not in ("pose", "update_param", "set_load", "move_gripper"))
    held = server.snapshot()
    assert held["params"] == {"translational_stiffness": 2000, "rotational_damping": 7.0}
    assert held["load"]["mass"] == 0.5 and held["impedance"]
    np.testing.assert_allclose(held["pose"], FakeArmConfig().home_pose, atol=1e-9)  # after jointreset


def test_fake_server_follows_targets_and_errors_like_the_real_one(server):
    client = FrankaClient(server.url)
    server.inject_error()
    client.send_pose([0.4, 0.0, 0.3, 1.0, 0.0, 0.0, 0.0])  # ignored: an error is pending
    time.sleep(0.05)
    assert client.get_pose()[0] == pytest.approx(0.5)
    client.clear_error()
    client.send_pose([0.4, 0.0, 0.3, 1.0, 0.0, 0.0, 0.0])
    time.sleep(0.05)
    assert client.get_pose()[0] == pytest.approx(0.4)
    import requests  # what any other client sees

    assert requests.get(server.url + "getstate", timeout=1).status_code == 405
    assert requests.post(server.url + "fly", timeout=1).status_code == 404
    assert requests.post(server.url + "pose", json={"arr": [1, 2]}, timeout=1).status_code == 400


def test_client_errors_name_the_url_route_and_failure(server):
    client = FrankaClient(server.url, timeout_s=0.2, retries=2)
    server.fail("getstate", 500)
    server.clear_recorded()
    with pytest.raises(RobotConnectionError, match=r"127\.0\.0\.1:\d+/ route 'getstate': answered HTTP 500"):
        client.get_state()
    assert len(server.recorded("getstate")) == 3  # a read is retried
    server.fail("pose", 500)
    with pytest.raises(RobotConnectionError, match="'pose': answered HTTP 500"):
        client.send_pose([0.5, 0.0, 0.3, 1.0, 0.0, 0.0, 0.0])
    assert len(server.recorded("pose")) == 1  # a command is not
    server.fail("getstate", 200, "<html>proxy error</html>")
    with pytest.raises(RobotConnectionError, match="non-JSON"):
        client.get_state()
    server.fail("getstate", 200, '{"pose": [0, 0, 0, 0, 0, 0, 1], "vel": [0, 0, 0]}')
    with pytest.raises(RobotConnectionError, match="field 'vel' has shape"):
        client.get_state()
    server.fail("getvel", 200, '{"velocity": []}')
    with pytest.raises(RobotConnectionError, match="lacks field 'vel'"):
        client.get_vel()
    server.heal()
    server.freeze()
    start = time.monotonic()
    with pytest.raises(RobotConnectionError, match="'getstate': no answer within"):
        client.get_state(timeout=0.3)
    assert time.monotonic() - start < 0.6
    server.unfreeze()
    with FakeFrankaServer() as other:
        closed_url = other.url
    with pytest.raises(RobotConnectionError, match=f"{closed_url}.*connection refused"):
        FrankaClient(closed_url, retries=0).get_state()


def test_every_call_has_a_total_deadline_even_against_a_trickling_server(server):
    client = FrankaClient(server.url, timeout_s=0.3, retries=2)
    server.trickle("getstate", 0.05)  # one byte every 50 ms: each read is quick, the answer takes ~40 s
    start = time.monotonic()
    with pytest.raises(RobotConnectionError, match="'getstate': no answer within"):
        client.get_state(timeout=0.5)
    assert time.monotonic() - start < 0.5 + SLACK
    start = time.monotonic()
    with pytest.raises(RobotConnectionError, match="no answer within"):
        client.get_state()  # default budget: 3 attempts x 0.3 s
    assert time.monotonic() - start < 3 * 0.3 + SLACK
    server.trickle("getstate", None)
    assert client.get_state().pose.shape == (7,)  # a fresh connection after the abandoned one


def test_non_finite_controller_values_are_refused_before_any_request(server):
    client = FrankaClient(server.url)
    server.clear_recorded()
    for bad in (math.nan, math.inf, "3000", True):
        with pytest.raises(ValueError, match="controller parameter 'translational_stiffness'"):
            client.update_params({"translational_stiffness": bad})
    with pytest.raises(ValueError, match="load mass must be finite"):
        client.set_load(math.nan, (0.0, 0.0, 0.05), (0.01, 0, 0, 0, 0.01, 0, 0, 0, 0.01))
    assert server.recorded() == []


# --- safety ------------------------------------------------------------------------------------


def test_validate_action_names_the_field():
    np.testing.assert_array_equal(validate_action([0, 0, 0, 0, 0, 0, 1.0000001]), [0, 0, 0, 0, 0, 0, 1])
    with pytest.raises(ValueError, match="'dz' \\(index 2\\) is nan"):
        validate_action([0, 0, np.nan, 0, 0, 0, 0])
    with pytest.raises(ValueError, match="'gripper' \\(index 6\\) = 1.5 is outside"):
        validate_action([0, 0, 0, 0, 0, 0, 1.5])
    with pytest.raises(ValueError, match="shape"):
        validate_action(np.zeros(6))


def test_workspace_box_clips_with_the_pi_wrap():
    box = WorkspaceBox((0.3, -0.2, 0.05), (0.7, 0.2, 0.4), (PI - 0.2, -0.3, -0.5), (PI + 0.2, 0.3, 0.5))
    # roll -3.1 is pi + 0.0416: inside the box around pi, kept (as +3.1832)
    np.testing.assert_allclose(box.clip_euler([-3.1, 0.0, 0.0]), [2 * PI - 3.1, 0.0, 0.0], atol=1e-12)
    # roll 2.5 lies below the box: clipped to pi - 0.2; roll -2.5 (= pi + 0.64) above it: pi + 0.2
    np.testing.assert_allclose(box.clip_euler([2.5, 0.4, -0.7]), [PI - 0.2, 0.3, -0.5], atol=1e-12)
    np.testing.assert_allclose(box.clip_euler([-2.5, 0.0, 0.0]), [PI + 0.2, 0.0, 0.0], atol=1e-12)
    position, quat = box.clip([0.8, 0.0, 0.0], Rotation.from_euler("xyz", [-2.5, 0.0, 0.0]).as_quat())
    np.testing.assert_allclose(position, [0.7, 0.0, 0.05])
    np.testing.assert_allclose(Rotation.from_quat(quat).as_euler("xyz"), [-(PI - 0.2), 0.0, 0.0], atol=1e-9)


# --- env ---------------------------------------------------------------------------------------


def test_reset_and_step_follow_the_contract(make):
    env = make()
    assert env.robot_spec.robot == "franka" and env.robot_spec.cameras == {"wrist": (24, 32), "front": (24, 32)}
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs) and info == {"success": False}
    np.testing.assert_allclose(obs["state"][:3], RESET_POSE[:3], atol=1e-5)
    np.testing.assert_allclose(obs["state"][3:6], RESET_POSE[3:], atol=1e-5)  # roll +pi, not -pi
    assert obs["state"][state_slice("gripper")][0] == pytest.approx(1.0)
    start = time.monotonic()
    for _ in range(5):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample() * 0.2)
        assert env.observation_space.contains(obs) and obs["state"].shape == (STATE_DIM,)
        assert reward == 0.0 and terminated is False and truncated is False and info == {"success": False}
    assert 5 * PERIOD * 0.9 < time.monotonic() - start < 5 * PERIOD + MARGIN  # the period is held
    assert env.render().shape == (24, 32, 3)


def test_actions_are_expressed_in_the_reset_frame(make, server):
    env = make()
    env.reset(seed=0)
    measured = env.state
    env.step([1, 0, 0, 0, 0, 0, 0])
    # +1 dx = 2 cm along the reset tool's x axis = the base's +y; orientation kept.
    target = poses_sent(server)[-1]
    np.testing.assert_allclose(target[:3], measured.position + [0.0, 0.02, 0.0], atol=1e-9)
    np.testing.assert_allclose(abs(np.dot(target[3:], measured.quat)), 1.0, atol=1e-9)
    measured = env.state
    env.step([0, 0, 0, 0, 0, 1, 0])
    # +1 drz = 0.1 rad about the reset tool's z axis = the base's -z: yaw decreases by 0.1.
    target = poses_sent(server)[-1]
    np.testing.assert_allclose(target[:3], measured.position, atol=1e-9)
    yaw = Rotation.from_quat(target[3:]).as_euler("xyz")[2]
    assert yaw == pytest.approx(measured.euler[2] - 0.1, abs=1e-9)


def test_base_frame_actions_and_box_clipping(make, server):
    env = make(action_frame="base", xyz_high=(0.7, 0.01, 0.4))
    env.reset(seed=0)
    measured = env.state
    env.step([1, 1, 0, 0, 0, 0, 0])  # base frame: +2 cm x, +2 cm y, but y is capped at 0.01
    np.testing.assert_allclose(poses_sent(server)[-1][:3], [measured.position[0] + 0.02, 0.01, measured.position[2]],
                               atol=1e-9)


def test_rotations_are_clipped_across_the_pi_wrap(make, server):
    env = make(action_frame="tcp", rot_scale=0.5)  # tcp frame: drx turns about the tool's x = roll
    for drx, roll in ((1.0, PI + 0.3), (-1.0, PI - 0.3)):  # roll pi ± 0.5 is outside the box pi ± 0.3
        env.reset(seed=0)
        np.testing.assert_allclose(env.workspace.wrap_euler(env.state.euler), [PI, 0.0, PI / 2], atol=1e-6)
        env.step([0, 0, 0, drx, 0, 0, 0])
        target = Rotation.from_quat(poses_sent(server)[-1][3:])
        expected = Rotation.from_euler("xyz", [roll, 0.0, PI / 2])
        assert (target * expected.inv()).magnitude() < 1e-6


def test_gripper_commands_are_debounced(make, server):
    env = make(gripper_sleep_s=0.1)
    env.reset(seed=0)
    reset_open = server.recorded("open_gripper")[-1].time

    def run(value, steps):
        for _ in range(steps):
            env.step([0, 0, 0, 0, 0, 0, value])

    for _ in range(20):  # "close" until it is sent: no sooner than 0.1 s after the reset's open
        run(1.0, 1)
        if server.recorded("close_gripper"):
            break
    closes = server.recorded("close_gripper")
    assert len(closes) == 1 and closes[0].time - reset_open >= 0.1
    run(1.0, 1)  # held: not sent again
    run(-1.0, 1)  # "open" 0.04 s after the close: too soon
    assert len(server.recorded("open_gripper")) == 1
    run(-1.0, 8)  # held: sent once allowed, once
    run(0.4, 5)  # inside the thresholds: nothing
    run(-0.6, 5)  # already open: nothing
    assert len(server.recorded("close_gripper")) == 1 and len(server.recorded("open_gripper")) == 2


def test_invalid_actions_raise_before_anything_is_sent(make, server):
    env = make()
    env.reset(seed=0)
    server.clear_recorded()
    for bad, match in (([0, 0, np.nan, 0, 0, 0, 0], "'dz'"), (np.zeros(6), "shape"),
                       ([0, 0, 0, 0, 0, np.inf, 0], "'drz'"), ([2.0, 0, 0, 0, 0, 0, 0], "'dx'"), ("left", "7 numbers")):
        with pytest.raises(ValueError, match=match):
            env.step(bad)
    assert server.recorded() == []  # no pose, no request at all
    env.step(np.zeros(7))  # the env is still usable
    assert len(server.recorded("pose")) == 1


def test_a_frozen_server_trips_the_watchdog_and_names_the_host(make, server):
    env = make()
    env.reset(seed=0)
    env.step(np.zeros(7))
    held = env.state.pose.copy()
    server.freeze()
    frozen_at = time.monotonic()
    # the request's deadline or the watchdog's thread, whichever comes first, names the host and the route
    with pytest.raises(RobotSafetyStop, match=r"Franka server http://127\.0\.0\.1:\d+/: .*route 'clearerr'"):
        env.step(np.zeros(7))
    # clearerr times out at the end of period + margin; the hold gets one more margin
    assert time.monotonic() - frozen_at < PERIOD + 2 * MARGIN + 0.15
    holds = poses_sent(server, since=frozen_at)
    assert len(holds) == 1 and np.allclose(holds[0], held)  # the hold was attempted, with the measured pose
    with pytest.raises(RobotSafetyStop, match="reset\\(\\) to continue"):
        env.step(np.zeros(7))  # nothing more is sent
    assert len(poses_sent(server, since=frozen_at)) == 1
    server.unfreeze()
    env.reset(seed=1)  # re-arms
    env.step(np.zeros(7))


def test_a_trickling_server_stops_the_arm_within_one_period_plus_margin(make, server):
    env = make()
    env.reset(seed=0)
    env.step(np.zeros(7))
    held = env.state.pose.copy()
    server.trickle("getstate", 0.05)  # every read of the answer is quick; the answer never ends in time
    started = time.monotonic()
    with pytest.raises(RobotSafetyStop, match=r"Franka server http://127\.0\.0\.1:\d+/.*'getstate'"):
        env.step(np.zeros(7))
    assert time.monotonic() - started < PERIOD + MARGIN + SLACK
    hold = server.recorded("pose")[-1]
    assert np.allclose(hold.body["arr"], held) and hold.time - started < PERIOD + MARGIN + SLACK
    with pytest.raises(RobotSafetyStop, match="reset\\(\\) to continue"):
        env.step(np.zeros(7))
    assert server.recorded("pose")[-1] is hold  # nothing more is sent


def test_the_watchdog_holds_a_step_stuck_anywhere_and_names_what_it_was_doing():
    holds = []
    watchdog = ControlWatchdog(PERIOD, MARGIN, hold=lambda: holds.append(time.monotonic()) or "held",
                               name="unit arm")
    try:
        due = watchdog.begin_step()
        watchdog.time_left("reading the cameras")
        while not holds and time.monotonic() < due + MARGIN + 2.0:  # the step is stuck (a camera, a lock, ...)
            time.sleep(0.005)
        assert len(holds) == 1 and MARGIN <= holds[0] - due < MARGIN + SLACK
        assert "while reading the cameras" in watchdog.reason
        with pytest.raises(RobotSafetyStop, match="reading the cameras"):
            watchdog.time_left("waiting for route 'pose'")  # the stuck step sends nothing more
        with pytest.raises(RobotSafetyStop):
            watchdog.end_step()
        assert len(holds) == 1
    finally:
        watchdog.close()


def test_a_stalled_client_gets_the_arm_held_and_the_next_step_raises(make, server):
    env = make()
    env.reset(seed=0)
    env.step([0.5, 0, 0, 0, 0, 0, 0])
    held, last_step = env.state.pose.copy(), time.monotonic()
    time.sleep(PERIOD + MARGIN + 0.15)  # the caller stalls
    holds = poses_sent(server, since=last_step)
    assert len(holds) == 1 and np.allclose(holds[0], held)
    hold_time = server.recorded("pose")[-1].time
    assert PERIOD + MARGIN - 0.02 <= hold_time - last_step < PERIOD + MARGIN + 0.1
    with pytest.raises(RobotSafetyStop, match="no step\\(\\) for .* the client side stalled"):
        env.step(np.zeros(7))
    assert len(poses_sent(server, since=last_step)) == 1


def test_the_watchdog_sleeps_between_episodes(make, server):
    env = make(max_episode_steps=3)
    env.reset(seed=0)
    for expected in (False, False, True):
        truncated = env.step(np.zeros(7))[3]
        assert truncated is expected
    done_at = time.monotonic()
    time.sleep(PERIOD + MARGIN + 0.1)  # the operator takes their time: no safety stop
    assert poses_sent(server, since=done_at) == []
    env.reset(seed=1)
    time.sleep(PERIOD + MARGIN + 0.1)  # nor before the first step (policy warm-up)
    env.step(np.zeros(7))


def test_an_episode_the_operator_ends_puts_the_watchdog_to_sleep(make, server):
    from vlarft.robot_io.intervention import InterventionWrapper
    from vlarft.robot_io.teleop.base import SUCCESS, TeleopCommand

    class SuccessButton:  # a device whose operator presses SUCCESS on the second poll
        polls = 0

        def reset(self):
            pass

        def poll(self):
            self.polls += 1
            buttons = frozenset({SUCCESS}) if self.polls == 2 else frozenset()
            return TeleopCommand(np.zeros(7, np.float32), False, buttons)

        def close(self):
            pass

    env = InterventionWrapper(make(), SuccessButton())
    env.reset(seed=0)
    env.step(np.zeros(7))
    info = env.step(np.zeros(7))[4]
    assert info["buttons"] == {SUCCESS}  # the episode ended here (operator_outcome)
    done_at = time.monotonic()
    time.sleep(PERIOD + MARGIN + 0.1)  # writing the episode, the operator resetting the scene
    assert poses_sent(server, since=done_at) == [] and env.unwrapped.watchdog.reason is None
    env.reset(seed=1)
    env.step(np.zeros(7))


def test_reset_modes_joint_reset_period_and_seeded_randomisation(make, server):
    env = make(joint_reset_every=2, reset_xy_range=0.03, reset_z_range=0.01, reset_yaw_range=0.2)
    server.clear_recorded()
    env.reset(seed=7)
    routes = [r.route for r in server.recorded()]
    first_move = routes.index("pose", routes.index("update_param"))
    assert routes.index("update_param") < first_move < len(routes) - 1 - routes[::-1].index("update_param")
    params = [r.body for r in server.recorded("update_param")]
    assert params == [{"translational_stiffness": 3000.0}, {"translational_stiffness": 1000.0}]  # precision, compliance
    assert routes[0] == "clearerr" and "jointreset" not in routes
    pose_a = env.episode_reset_pose.copy()
    for _ in range(4):
        env.reset()
    assert len(server.recorded("jointreset")) == 2  # resets 2 and 4
    env.reset(options={"joint_reset": True})
    assert len(server.recorded("jointreset")) == 3
    # the move starts from where the joint reset left the arm (home, z = 0.3), not from before it
    first_move = poses_sent(server, since=server.recorded("jointreset")[-1].time)[0]
    assert first_move[2] == pytest.approx((0.3 + env.episode_reset_pose[2]) / 2, abs=1e-6)
    env.reset(seed=7)
    np.testing.assert_allclose(env.episode_reset_pose, pose_a)
    offset = pose_a[:3] - RESET_POSE[:3]
    assert np.all(np.abs(offset) <= [0.03, 0.03, 0.01]) and np.any(np.abs(offset) > 1e-6)
    yaw = Rotation.from_quat(pose_a[3:]).as_euler("xyz")[2]
    assert abs(yaw - PI / 2) <= 0.2


def test_factory_builds_bundled_and_file_tasks(server, tmp_path):
    assert "franka:pick_place" in list_envs()
    fast = {"server_url": server.url, "cameras": CAMERAS, "control_hz": HZ, "reset_move_s": 0.04,
            "reset_pause_s": 0.0}
    env = make_env("franka:pick_place", **fast)
    try:
        assert env.unwrapped.robot_spec.task == "pick_place"
        obs, _ = env.reset(seed=0)
        assert env.observation_space.contains(obs)
    finally:
        env.close()
    path = tmp_path / "my_task.toml"
    path.write_text('instruction = "x"\nserver_url = "http://127.0.0.9:1/"\nxyz_low = [0.3, -0.2, 0.05]\n'
                    'xyz_high = [0.7, 0.2, 0.4]\neuler_low = [3.0, -0.2, -0.5]\neuler_high = [3.3, 0.2, 0.5]\n'
                    'reset_pose = [0.5, 0.0, 0.2, 3.14159, 0.0, 0.0]\n'
                    '[[cameras]]\nname = "wrist"\nkind = "synthetic"\nsize = [16, 16]\n')
    env = make_env(f"franka:{path}", server_url=server.url)
    try:
        assert env.unwrapped.robot_spec.task == "my_task" and env.unwrapped.robot_spec.cameras == {"wrist": (16, 16)}
    finally:
        env.close()
    with pytest.raises(RobotConnectionError, match="127.0.0.9:1"):
        make_env(f"franka:{path}")  # the file's own URL: nothing listens there


def test_acting_on_a_task_without_a_camera_the_policy_needs_is_refused(server, tmp_path):
    from vlarft.agents.training import StageOptions, eval_env_factory
    from vlarft.datasets.schema import EpisodeSpec

    path = tmp_path / "no_front.toml"
    path.write_text(f'instruction = "x"\nserver_url = "{server.url}"\nxyz_low = [0.3, -0.2, 0.05]\n'
                    'xyz_high = [0.7, 0.2, 0.4]\neuler_low = [3.0, -0.2, -0.5]\neuler_high = [3.3, 0.2, 0.5]\n'
                    'reset_pose = [0.5, 0.0, 0.2, 3.14159, 0.0, 0.0]\n'
                    '[[cameras]]\nname = "wrist"\nkind = "synthetic"\nsize = [16, 16]\n')
    trained_on = EpisodeSpec(cameras={"front": (16, 16), "wrist": (16, 16)})
    make = eval_env_factory(StageOptions(dataset_dir="", workdir="", steps=0, env=f"franka:{path}"), trained_on)
    with pytest.raises(ValueError, match=r"no_front\.toml: the policy needs camera 'front' \[16, 16\] is missing"):
        make()  # the online actor and evaluation build their robot through this


def test_the_fake_server_bounds_and_type_checks_what_it_is_sent():
    import http.client

    import requests

    with FakeFrankaServer(max_records=5) as fake:
        conn = http.client.HTTPConnection("127.0.0.1", int(fake.url.rsplit(":", 1)[1].strip("/")), timeout=5)
        conn.putrequest("POST", "/pose")
        conn.putheader("Content-Length", str(10 ** 9))  # announced, never sent
        conn.endheaders()
        assert conn.getresponse().status == 413
        conn.close()
        post = lambda route, **kwargs: requests.post(fake.url + route, timeout=5, **kwargs)
        assert post("pose", data="[" * 30000 + "]" * 30000).status_code == 400  # deep JSON
        assert post("pose", data=b"\xff\xfe not json").status_code == 400
        for route, body in [("pose", {"arr": ["0.5", 0, 0.3, 1, 0, 0, 0]}), ("pose", {"arr": [0.5, 0, 0.3, 1, 0, 0]}),
                            ("update_param", {"translational_stiffness": "stiff"}),
                            ("update_param", {"translational_stifness": 2000}),
                            ("set_load", {"mass": "heavy", "F_x_center_load": [0, 0, 0], "load_inertia": [0] * 9}),
                            ("move_gripper", {"gripper_pos": "12"}), ("move_gripper", {"gripper_pos": 300}),
                            ("move_gripper", {"gripper_pos": True})]:
            assert post(route, json=body).status_code == 400, (route, body)
        assert post("update_param", data='{"translational_stiffness": NaN}').status_code == 400
        assert fake.snapshot()["params"] == {} and fake.snapshot()["load"] == {}
        assert post("update_param", json={"translational_stiffness": 2000}).status_code == 200  # still serving
        recorded = fake.recorded()
        assert len(recorded) == 5 and recorded[-1].route == "update_param"  # only the newest are kept

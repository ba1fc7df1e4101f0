"""Teleop devices and the intervention wrapper without hardware (fake HID/joystick, dummy SDL)."""

import os

os.environ["SDL_VIDEODRIVER"] = "dummy"  # before pygame starts its display
os.environ["SDL_AUDIODRIVER"] = "dummy"
os.environ["PYGAME_HIDE_SUPPORT_PROMPT"] = "1"

import threading  # noqa: E402
import time  # noqa: E402

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import pygame  # noqa: E402
import pytest  # noqa: E402

from conftest import int16le  # noqa: E402
from vlarft.robot_io.contract import (  # noqa: E402
    INFO_INTERVENTION,
    INFO_INTERVENTION_ACTION,
    INFO_SUCCESS,
    STATE_DIM,
)
from vlarft.robot_io.intervention import InterventionWrapper  # noqa: E402
from vlarft.robot_io.teleop import DEVICES, DeviceNotAvailableError, make_teleop  # noqa: E402
from vlarft.robot_io.teleop.common import apply_dead_zone  # noqa: E402
from vlarft.robot_io.teleop import gamepad, keyboard, spacemouse  # noqa: E402
from vlarft.robot_io.teleop.base import (  # noqa: E402
    END_EPISODE,
    FAILURE,
    PAUSE,
    SUCCESS,
    TeleopCommand,
)

sm = spacemouse
OPEN, CLOSED = -1.0, 1.0


# ----------------------------------------------------------------------------- SpaceMouse parser


def test_int16le_helper_matches_hand_bytes():
    assert int16le(175, -175, 350) == [0xAF, 0x00, 0x51, 0xFF, 0x5E, 0x01]


def test_parse_translation_then_rotation_reports():
    state = sm.parse_report([1, 0xAF, 0x00, 0x51, 0xFF, 0x5E, 0x01], sm.SpaceMouseState())
    assert state.axes == (175, -175, 350, 0, 0, 0)
    state = sm.parse_report([2] + int16le(35, 0, -600), state)  # rotation keeps translation
    assert state.axes == (175, -175, 350, 35, 0, -600)
    np.testing.assert_allclose(sm.normalise(state.axes, 350.0), [0.5, -0.5, 1.0, 0.1, 0.0, -1.0],
                               atol=1e-6)


def test_parse_13_byte_report_carries_translation_and_rotation():
    state = sm.parse_report([1] + int16le(1, 2, 3, 4, 5, 6), sm.SpaceMouseState())
    assert state.axes == (1, 2, 3, 4, 5, 6)


def test_parse_buttons_and_ignores_unknown_or_short_reports():
    state = sm.parse_report([3, 0x03, 0x00], sm.SpaceMouseState())
    assert state.buttons == 0b11
    assert sm.parse_report([0x17, 80], state) == state  # battery report of wireless models
    assert sm.parse_report([1, 0], state) == state
    assert sm.parse_report([], state) == state
    assert sm.pressed_buttons(0b01, 0b110) == [1, 2]


def test_dead_zone_zeroes_small_values_and_rescales_the_rest():
    out = apply_dead_zone([0.04, -0.05, 0.5, -1.0], 0.05)
    np.testing.assert_allclose(out, [0.0, 0.0, 0.45 / 0.95, -1.0], atol=1e-6)
    with pytest.raises(ValueError):
        apply_dead_zone([0.0], 1.0)


def test_default_mapping_operator_behind_robot():
    cfg = sm.SpaceMouseConfig(dead_zone=0.0)
    state = sm.SpaceMouseState(axes=(175, -350, -175, 0, 0, 35))  # right, away, up, twist
    cmd = sm.spacemouse_command(state, [], OPEN, cfg)
    # dx = -y, dy = -x, dz = -z, drz = -rz
    np.testing.assert_allclose(cmd.action, [1.0, -0.5, 0.5, 0.0, 0.0, -0.1, OPEN], atol=1e-6)
    assert cmd.engaged and cmd.buttons == frozenset()
    cmd = sm.spacemouse_command(sm.SpaceMouseState(axes=(0, 0, 0, 175, -175, 0)), [], OPEN, cfg)
    np.testing.assert_allclose(cmd.action[3:6], [0.5, -0.5, 0.0], atol=1e-6)  # drx = -ry, dry = -rx


def test_facing_robot_mapping_and_dead_zone_in_command():
    cfg = sm.SpaceMouseConfig.facing_robot(dead_zone=0.05)
    cmd = sm.spacemouse_command(sm.SpaceMouseState(axes=(175, 0, 0, 0, 0, 0)), [], OPEN, cfg)
    np.testing.assert_allclose(cmd.action[:6], [0, 0.45 / 0.95, 0, 0, 0, 0], atol=1e-6)


def test_small_deflection_is_not_engaged():
    cmd = sm.spacemouse_command(sm.SpaceMouseState(axes=(10, -10, 5, 0, 0, 0)), [], OPEN,
                                sm.SpaceMouseConfig())
    assert not cmd.engaged
    np.testing.assert_array_equal(cmd.action, [0, 0, 0, 0, 0, 0, OPEN])


def test_buttons_set_gripper_and_engage():
    cfg = sm.SpaceMouseConfig()
    held_left = sm.SpaceMouseState(buttons=0b01)
    cmd = sm.spacemouse_command(held_left, [0], OPEN, cfg)
    assert cmd.engaged and cmd.action[6] == CLOSED
    cmd = sm.spacemouse_command(held_left, [], CLOSED, cfg)  # still held: engaged, stays closed
    assert cmd.engaged and cmd.action[6] == CLOSED
    cmd = sm.spacemouse_command(sm.SpaceMouseState(), [], CLOSED, cfg)  # released
    assert not cmd.engaged and cmd.action[6] == CLOSED
    cmd = sm.spacemouse_command(sm.SpaceMouseState(), [1], CLOSED, cfg)  # right click between polls
    assert cmd.engaged and cmd.action[6] == OPEN
    last_wins = sm.spacemouse_command(sm.SpaceMouseState(), [0, 1], OPEN, cfg)
    assert last_wins.action[6] == OPEN


def test_toggle_mode_and_button_events():
    cfg = sm.SpaceMouseConfig(toggle_gripper=True, button_events={2: SUCCESS})
    assert sm.spacemouse_command(sm.SpaceMouseState(), [0], OPEN, cfg).action[6] == CLOSED
    assert sm.spacemouse_command(sm.SpaceMouseState(), [0], CLOSED, cfg).action[6] == OPEN
    cmd = sm.spacemouse_command(sm.SpaceMouseState(buttons=0b100), [2], OPEN, cfg)
    assert cmd.buttons == {SUCCESS} and not cmd.engaged


# ----------------------------------------------------------------------------- SpaceMouse reader


class FakeHid:
    """Replays queued reports like `hid.device.read`; `wait_consumed` waits for the reader."""

    def __init__(self, fail_when_empty=False):
        self.pending, self.calls, self.closed = [], 0, False
        self.fail_when_empty = fail_when_empty
        self.cond = threading.Condition()

    def feed(self, *reports):
        with self.cond:
            self.pending.extend(list(r) for r in reports)

    def read(self, size, timeout_ms):
        assert size >= 13 and timeout_ms > 0
        with self.cond:
            self.calls += 1
            self.cond.notify_all()
            if self.pending:
                return self.pending.pop(0)
        if self.fail_when_empty:
            raise OSError("read error")
        time.sleep(timeout_ms / 1000)
        return []

    def wait_consumed(self, timeout=2.0):
        """Wait until every fed report was read and the reader came back (so it was ingested)."""
        with self.cond:
            assert self.cond.wait_for(lambda: not self.pending, timeout)
            calls = self.calls
            assert self.cond.wait_for(lambda: self.calls > calls, timeout)

    def close(self):
        self.closed = True


@pytest.fixture
def fake_hid():
    return FakeHid()


def test_reader_keeps_latest_value_and_catches_clicks(fake_hid):
    mouse = sm.SpaceMouse(device=fake_hid, dead_zone=0.0, read_timeout_ms=5)
    try:
        assert not mouse.poll().engaged  # nothing read yet: idle, never blocks
        fake_hid.feed([1] + int16le(100, 0, 0), [1] + int16le(175, 0, 0),  # latest x wins
                      [3, 0x01, 0x00], [3, 0x00, 0x00],  # left click between polls
                      [2] + int16le(0, 0, 0))
        fake_hid.wait_consumed()
        cmd = mouse.poll()
        np.testing.assert_allclose(cmd.action, [0, -0.5, 0, 0, 0, 0, CLOSED], atol=1e-6)
        assert cmd.engaged
        fake_hid.feed([1] + int16le(0, 0, 0))  # cap released
        fake_hid.wait_consumed()
        cmd = mouse.poll()
        assert not cmd.engaged and cmd.action[6] == CLOSED  # gripper kept between polls
        mouse.reset()
        assert mouse.poll().action[6] == OPEN
    finally:
        mouse.close()
    assert fake_hid.closed and not mouse._thread.is_alive()


def test_reader_error_surfaces_at_poll():
    fake = FakeHid(fail_when_empty=True)
    mouse = sm.SpaceMouse(device=fake, read_timeout_ms=5)
    mouse._thread.join(2.0)
    with pytest.raises(DeviceNotAvailableError, match="unplugged"):
        mouse.poll()
    mouse.close()


class FakeHidApi:
    """Stands in for the `hid` module: enumerate() and device() with open_path()."""

    def __init__(self, devices, open_error=None):
        self.devices, self.open_error, self.opened = devices, open_error, []

    def enumerate(self):
        return self.devices

    def device(self):
        api = self

        class Device(FakeHid):
            def open_path(self, path):
                api.opened.append(path)
                if api.open_error:
                    raise OSError(api.open_error)

        return Device()


KEYBOARD_HID = {"vendor_id": 0x046D, "product_id": 0xC31C, "path": b"/dev/hidraw0",
                "manufacturer_string": "Logitech", "product_string": "USB Keyboard",
                "usage_page": 1, "usage": 6}
COMPACT_HID = {"vendor_id": 0x256F, "product_id": 0xC635, "path": b"/dev/hidraw3",
               "manufacturer_string": "3Dconnexion", "product_string": "SpaceMouse Compact",
               "usage_page": 1, "usage": 8}


def test_find_spacemouse_prefers_multi_axis_interface():
    other_iface = {**COMPACT_HID, "path": b"/dev/hidraw2", "usage_page": 12, "usage": 1}
    assert sm.find_spacemouse([KEYBOARD_HID, other_iface, COMPACT_HID]) is COMPACT_HID
    assert sm.find_spacemouse([KEYBOARD_HID]) is None


def test_open_failure_message_names_device_udev_fix_and_visible_devices():
    api = FakeHidApi([KEYBOARD_HID, COMPACT_HID], open_error="open failed")
    with pytest.raises(DeviceNotAvailableError) as err:
        sm.SpaceMouse(hid_api=api)
    msg = str(err.value)
    for part in ("SpaceMouse Compact 256f:c635", "/dev/hidraw3", "open failed", "udev",
                 'ATTRS{idVendor}=="256f"', 'MODE="0666"', "plugdev", "replug",
                 "046d:c31c Logitech USB Keyboard"):
        assert part in msg, part
    assert api.opened == [b"/dev/hidraw3"]


def test_no_spacemouse_message_lists_devices_and_udev():
    with pytest.raises(DeviceNotAvailableError) as err:
        make_teleop("spacemouse", hid_api=FakeHidApi([KEYBOARD_HID]))
    msg = str(err.value)
    for part in ("No SpaceMouse found", "256f:c635", "046d:c31c", "udev"):
        assert part in msg, part


def test_open_by_path_and_read():
    api = FakeHidApi([COMPACT_HID])
    mouse = sm.SpaceMouse(hid_api=api, path="/dev/hidraw9", read_timeout_ms=5)
    assert api.opened == [b"/dev/hidraw9"]
    assert not mouse.poll().engaged
    mouse.close()


# ----------------------------------------------------------------------------- keyboard


def key(event_type, code):
    return pygame.event.Event(event_type, key=code)


def test_key_events_pure_mapping():
    cfg = keyboard.KeyboardConfig(translation_speed=0.5, rotation_speed=0.25)
    events = [key(pygame.KEYDOWN, pygame.K_w), key(pygame.KEYDOWN, pygame.K_d)]
    cmd, held = keyboard.map_key_events(events, frozenset(), OPEN, cfg)
    np.testing.assert_allclose(cmd.action, [0.5, -0.5, 0, 0, 0, 0, OPEN])
    assert cmd.engaged and held == {pygame.K_w, pygame.K_d}
    events = [key(pygame.KEYUP, pygame.K_w), key(pygame.KEYDOWN, pygame.K_q)]
    cmd, held = keyboard.map_key_events(events, held, OPEN, cfg)
    np.testing.assert_allclose(cmd.action, [0, -0.5, 0, 0, 0, 0.25, OPEN])
    focus_lost = [pygame.event.Event(pygame.WINDOWFOCUSLOST)]
    cmd, held = keyboard.map_key_events(focus_lost, held, OPEN, cfg)
    assert not cmd.engaged and held == frozenset()
    cmd, _ = keyboard.map_key_events([pygame.event.Event(pygame.QUIT)], held, OPEN, cfg)
    assert cmd.buttons == {END_EPISODE}


def test_keymap_covers_the_documented_keys():
    km = keyboard.KEYMAP
    keys = "wsadrfqejlik"
    names = ["+dx", "-dx", "+dy", "-dy", "+dz", "-dz", "+drz", "-drz",
             "+drx", "-drx", "+dry", "-dry"]
    assert [km[getattr(pygame, f"K_{k}")] for k in keys] == names
    assert km[pygame.K_SPACE] == "gripper" and km[pygame.K_RETURN] == SUCCESS
    assert km[pygame.K_BACKSPACE] == FAILURE and km[pygame.K_ESCAPE] == END_EPISODE
    assert km[pygame.K_TAB] == km[pygame.K_DELETE] == "rerecord" and km[pygame.K_p] == PAUSE
    with pytest.raises(ValueError, match="bad keymap"):
        keyboard.check_keymap({pygame.K_x: "+dq"})


@pytest.fixture
def kb():
    device = make_teleop("keyboard")
    pygame.event.clear()  # drop the window's own start-up events
    yield device
    device.close()


def post(*events):
    for event_type, code in events:
        pygame.event.post(key(event_type, code))


def test_keyboard_window_motion_gripper_and_buttons(kb):
    post((pygame.KEYDOWN, pygame.K_w))
    cmd = kb.poll()
    assert cmd.engaged and cmd.action[0] == pytest.approx(0.5) and cmd.action[6] == OPEN
    assert kb.poll().engaged  # still held
    post((pygame.KEYUP, pygame.K_w))
    cmd = kb.poll()
    assert not cmd.engaged and not cmd.action[:6].any()
    post((pygame.KEYDOWN, pygame.K_SPACE), (pygame.KEYUP, pygame.K_SPACE))
    cmd = kb.poll()
    assert cmd.engaged and cmd.action[6] == CLOSED and not cmd.action[:6].any()
    cmd = kb.poll()
    assert not cmd.engaged and cmd.action[6] == CLOSED  # gripper kept
    post((pygame.KEYDOWN, pygame.K_RETURN), (pygame.KEYUP, pygame.K_RETURN))
    cmd = kb.poll()
    assert cmd.buttons == {SUCCESS} and not cmd.engaged
    post((pygame.KEYDOWN, pygame.K_ESCAPE))
    assert kb.poll().buttons == {END_EPISODE}
    post((pygame.KEYDOWN, pygame.K_r), (pygame.KEYUP, pygame.K_r))  # a tap between polls moves
    cmd = kb.poll()
    assert cmd.engaged and cmd.action[2] == pytest.approx(0.5)
    post((pygame.KEYDOWN, pygame.K_a))
    kb.poll()
    kb.reset()  # releases keys, gripper open
    cmd = kb.poll()
    assert not cmd.engaged and cmd.action[6] == OPEN


def test_keyboard_window_shows_camera_images(kb):
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 255
    kb.show({"image_front": red, "state": np.zeros(STATE_DIM, np.float32)})
    assert tuple(kb.screen.get_at((100, 200)))[:3] == (255, 0, 0)
    kb.poll()  # redraw keeps the image
    assert tuple(kb.screen.get_at((100, 200)))[:3] == (255, 0, 0)


# ----------------------------------------------------------------------------- gamepad

RB, LB, A_BUTTON = 5, 4, 0
REST = [0.0, 0.0, -1.0, 0.0, 0.0, -1.0]  # sticks centred, triggers released


def buttons(*held, n=11):
    return [i in held for i in range(n)]


def test_gamepad_sticks_need_the_deadman_button():
    cfg = gamepad.GamepadConfig()
    axes = list(REST)
    axes[1] = -1.0  # left stick fully up
    axes[3] = 0.575  # right stick right: (0.575 - 0.15) / 0.85 = 0.5
    cmd = gamepad.gamepad_command(axes, buttons(RB), [], OPEN, cfg)
    assert cmd.engaged
    np.testing.assert_allclose(cmd.action, [1.0, 0, 0, 0, 0, -0.5, OPEN], atol=1e-6)
    cmd = gamepad.gamepad_command(axes, buttons(), [], OPEN, cfg)  # RB released: nothing moves
    assert not cmd.engaged and not cmd.action[:6].any()
    axes[4] = 0.1  # right stick barely down: inside the dead zone
    assert gamepad.gamepad_command(axes, buttons(RB), [], OPEN, cfg).action[2] == 0.0


def test_gamepad_gripper_and_event_buttons():
    cfg = gamepad.GamepadConfig()
    rt, lt = list(REST), list(REST)
    rt[5], lt[2] = 1.0, 1.0
    assert gamepad.gamepad_command(rt, buttons(RB), [], OPEN, cfg).action[6] == CLOSED
    assert gamepad.gamepad_command(lt, buttons(RB), [], CLOSED, cfg).action[6] == OPEN
    assert gamepad.gamepad_command(REST, buttons(RB, LB), [LB], OPEN, cfg).action[6] == CLOSED
    assert gamepad.gamepad_command(rt, buttons(), [], OPEN, cfg).action[6] == OPEN  # no dead-man
    cmd = gamepad.gamepad_command(REST, buttons(A_BUTTON), [A_BUTTON], OPEN, cfg)
    assert cmd.buttons == {SUCCESS} and not cmd.engaged
    assert gamepad.gamepad_command([0.5], buttons(RB), [1, 3, 7], OPEN, cfg).buttons == {
        FAILURE, END_EPISODE, PAUSE}  # a 1-axis pad does not crash


class FakeJoystick:
    def __init__(self):
        self.axes, self.buttons = list(REST), buttons()

    def get_numaxes(self):
        return len(self.axes)

    def get_axis(self, i):
        return self.axes[i]

    def get_numbuttons(self):
        return len(self.buttons)

    def get_button(self, i):
        return self.buttons[i]


def test_gamepad_device_edges_and_gripper_memory():
    js = FakeJoystick()
    pad = gamepad.GamepadTeleop(joystick=js)
    js.buttons = buttons(A_BUTTON, RB)
    js.axes[5] = 1.0
    cmd = pad.poll()
    assert cmd.buttons == {SUCCESS} and cmd.engaged and cmd.action[6] == CLOSED
    js.axes[5] = -1.0
    cmd = pad.poll()  # A still held: no second event; gripper stays closed
    assert cmd.buttons == frozenset() and cmd.action[6] == CLOSED
    pad.reset()
    assert pad.poll().action[6] == OPEN
    pad.close()


def test_gamepad_missing_says_hold_rb(monkeypatch):
    monkeypatch.setattr(pygame.joystick, "get_count", lambda: 0)
    with pytest.raises(DeviceNotAvailableError) as err:
        make_teleop("gamepad")
    msg = str(err.value)
    assert "No gamepad" in msg and "HOLD RB" in msg and "dead-man" in msg
    assert "HOLD RB" in gamepad.__doc__


# ----------------------------------------------------------------------------- make_teleop


def test_make_teleop_errors():
    assert DEVICES == ("scripted", "scripted_intervention", "spacemouse", "keyboard", "gamepad")
    with pytest.raises(ValueError) as err:
        make_teleop("joystick9000")
    assert all(name in str(err.value) for name in DEVICES)
    with pytest.raises(ValueError, match="env"):
        make_teleop("scripted")
    with pytest.raises(TypeError, match="sped"):
        make_teleop("keyboard", sped=1.0)


def test_make_teleop_scripted_drives_the_sim_through_the_wrapper():
    pytest.importorskip("vlarft.robot_io.sim.scripted_operator")
    try:
        from vlarft.robot_io.factory import make_env
    except ImportError:  # the factory is newer than the simulator
        from vlarft.robot_io.sim import SimRobotEnv

        env = SimRobotEnv(task="pick_cube", render_images=False)
    else:
        env = make_env("sim:pick_cube", image_size=32)
    wrapper = InterventionWrapper(env, make_teleop("scripted", env=env, seed=0))
    try:
        assert type(wrapper.device).__name__ == "ScriptedOperator"
        wrapper.reset(seed=0)
        infos = [wrapper.step(np.zeros(7, np.float32))[-1] for _ in range(3)]
        assert all(i[INFO_INTERVENTION] for i in infos) and infos[-1]["intervention_segments"] == 1
    finally:
        wrapper.close()


# ----------------------------------------------------------------------------- intervention wrapper


class TinyEnv(gym.Env):
    """Dict obs (one image + state), Box[-1, 1]^7 actions; records what it is sent."""

    def __init__(self):
        self.observation_space = gym.spaces.Dict({
            "image_front": gym.spaces.Box(0, 255, (8, 8, 3), np.uint8),
            "state": gym.spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32),
        })
        self.action_space = gym.spaces.Box(-1.0, 1.0, (7,), np.float32)
        self.actions = []
        self.closed = False

    def _obs(self):
        return {"image_front": np.zeros((8, 8, 3), np.uint8),
                "state": np.zeros(STATE_DIM, np.float32)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self._obs(), {INFO_SUCCESS: False}

    def step(self, action):
        self.actions.append(np.array(action, copy=True))
        return self._obs(), 0.0, False, False, {INFO_SUCCESS: False}

    def close(self):
        self.closed = True


class ScriptedDevice:
    """Plays a list of commands (idle once exhausted); records resets, gripper syncs and shows."""

    def __init__(self, commands):
        self.commands, self.synced = list(commands), []
        self.resets, self.shown, self.closed = 0, 0, False

    def reset(self):
        self.resets += 1

    def poll(self):
        return self.commands.pop(0) if self.commands else idle(0.0)

    def sync_gripper(self, value):
        self.synced.append(value)

    def show(self, observation):
        assert "image_front" in observation
        self.shown += 1

    def close(self):
        self.closed = True


def human(*action, buttons=()):
    return TeleopCommand(np.array(action, np.float32), True, frozenset(buttons))


def idle(gripper=0.0, buttons=()):
    action = np.array([0, 0, 0, 0, 0, 0, gripper], np.float32)
    return TeleopCommand(action, False, frozenset(buttons))


POLICY = np.array([0.1, 0.2, 0.3, 0.0, 0.0, 0.0, 0.8], np.float32)


def wrapped(commands):
    env, device = TinyEnv(), ScriptedDevice(commands)
    wrapper = InterventionWrapper(env, device)
    return env, device, wrapper


def test_engaged_steps_execute_the_device_action():
    env, device, w = wrapped([idle(), human(0.5, 0, 0, 0, 0, 0, 1, buttons={SUCCESS})])
    _, info = w.reset(seed=0)
    assert device.resets == 1 and info["intervention_steps"] == 0 and device.shown == 1
    _, _, _, _, info = w.step(POLICY)
    np.testing.assert_array_equal(env.actions[-1], POLICY)
    assert info[INFO_INTERVENTION] is False and not info[INFO_INTERVENTION_ACTION].any()
    np.testing.assert_array_equal(info["executed_action"], POLICY)
    assert device.synced == [pytest.approx(0.8)]  # device follows the policy's gripper
    _, _, _, _, info = w.step(POLICY)
    expected = np.array([0.5, 0, 0, 0, 0, 0, 1], np.float32)
    np.testing.assert_array_equal(env.actions[-1], expected)
    assert info[INFO_INTERVENTION] is True and info["buttons"] == {SUCCESS}
    assert info[INFO_SUCCESS] is False  # the env's own info is kept
    np.testing.assert_array_equal(info[INFO_INTERVENTION_ACTION], expected)
    assert len(device.synced) == 1 and device.shown == 3


def test_actions_are_clipped_into_the_box():
    env, _, w = wrapped([idle(), human(1.5, -2, 0, 0, 0, 0, 3)])
    w.reset()
    w.step([2.0, -3.0, 0.5, 0, 0, 0, 1.0])
    np.testing.assert_array_equal(env.actions[-1], [1.0, -1.0, 0.5, 0, 0, 0, 1.0])
    _, _, _, _, info = w.step(POLICY)
    np.testing.assert_array_equal(env.actions[-1], [1.0, -1.0, 0, 0, 0, 0, 1.0])
    np.testing.assert_array_equal(info[INFO_INTERVENTION_ACTION], [1.0, -1.0, 0, 0, 0, 0, 1.0])


@pytest.mark.parametrize("bad", [np.zeros(6), np.zeros((1, 7)), [0, 0, 0, 0, 0, 0, np.nan], None])
def test_bad_policy_action_raises_with_expected_dimension(bad):
    env, _, w = wrapped([])
    w.reset()
    with pytest.raises(ValueError, match="action dimension 7"):
        w.step(bad)
    assert env.actions == []


def test_intervention_segments_and_steps():
    pattern = [False, True, True, False, True, False, False, True, True, True]
    env, _, w = wrapped([human(0, 0, 0.2, 0, 0, 0, -1) if e else idle() for e in pattern])
    w.reset()
    infos = [w.step(POLICY)[-1] for _ in pattern]
    assert [i["intervention_segments"] for i in infos] == [0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert [i["intervention_steps"] for i in infos] == [0, 1, 2, 2, 3, 3, 3, 4, 5, 6]
    assert [i[INFO_INTERVENTION] for i in infos] == pattern
    assert (w.intervention_segments, w.intervention_steps) == (3, 6)
    _, info = w.reset()
    assert (w.intervention_segments, w.intervention_steps) == (0, 0)
    assert (info["intervention_segments"], info["intervention_steps"]) == (0, 0)


def test_pause_holds_still_unless_the_human_is_engaged():
    commands = [idle(), idle(buttons={PAUSE}), human(0, 0.4, 0, 0, 0, 0, -0.5), idle(),
                idle(buttons={PAUSE}), idle(buttons={PAUSE})]
    env, _, w = wrapped(commands)
    w.reset()
    infos = [w.step(POLICY)[-1] for _ in range(5)]
    np.testing.assert_array_equal(env.actions[0], POLICY)
    np.testing.assert_allclose(env.actions[1], [0, 0, 0, 0, 0, 0, 0.8])  # hold still, gripper kept
    np.testing.assert_allclose(env.actions[2], [0, 0.4, 0, 0, 0, 0, -0.5])  # human moves, paused
    np.testing.assert_allclose(env.actions[3], [0, 0, 0, 0, 0, 0, -0.5])  # hold, human's gripper
    np.testing.assert_array_equal(env.actions[4], POLICY)  # unpaused
    assert [i["paused"] for i in infos] == [False, True, True, True, False]
    assert [i[INFO_INTERVENTION] for i in infos] == [False, False, True, False, False]
    w.step(POLICY)  # pause again, then a reset unpauses
    assert w.paused
    w.reset()
    assert not w.paused


def test_close_closes_device_and_env():
    env, device, w = wrapped([])
    w.close()
    assert device.closed and env.closed

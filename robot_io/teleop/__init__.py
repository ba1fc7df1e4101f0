"""Teleoperation devices behind one interface: `TeleopDevice.poll() -> TeleopCommand`.

`make_teleop(name, env=None, **kwargs)` builds one of `DEVICES`:
  * `scripted`   - the simulator's `ScriptedOperator(env, **kwargs)`, a stand-in human (needs env);
  * `scripted_intervention` - the simulator's `ScriptedIntervener(env, **kwargs)`: a stand-in
                   human who takes over only when the policy stalls or gets into a bad state
                   (needs env);
  * `spacemouse` - 3Dconnexion SpaceMouse over HID (`spacemouse.SpaceMouse`);
  * `keyboard`   - keys in a pygame window with a live camera view (`keyboard.KeyboardTeleop`);
  * `gamepad`    - pygame joystick with a dead-man button, hold RB (`gamepad.GamepadTeleop`).
For the hardware devices `kwargs` are fields of their config dataclass (e.g. `dead_zone=0.1`);
`make_device_for` takes them from the env (a Franka task TOML's `[teleop.<device>]` table).

Frame convention of the default mappings: the operator stands BEHIND the robot, looking along the
robot base's +x axis, so +x = away from the operator, +y = to the operator's left, +z = up, and
rotations are right-handed about those axes (+drz = counter-clockwise seen from above).

Hardware devices also implement `sync_gripper(value)`: `InterventionWrapper` calls it while the
policy is in control, so taking over never snaps the gripper to a stale device-side value.

The helpers the device modules share live in `common.py`.
"""

from __future__ import annotations

from typing import Any

from vlarft.robot_io.teleop.base import TeleopDevice
from vlarft.robot_io.teleop.common import DeviceNotAvailableError  # noqa: F401 (re-exported)

DEVICES = ("scripted", "scripted_intervention", "spacemouse", "keyboard", "gamepad")


def make_teleop(name: str, env: Any = None, **kwargs: Any) -> TeleopDevice:
    """Build the teleop device called `name` (one of `DEVICES`)."""
    if name == "scripted":
        if env is None:
            raise ValueError("make_teleop('scripted') needs env=...: the operator reads the sim")
        from vlarft.robot_io.sim.scripted_operator import ScriptedOperator

        return ScriptedOperator(env, **kwargs)
    if name == "scripted_intervention":
        if env is None:
            raise ValueError(
                "make_teleop('scripted_intervention') needs env=...: the intervener reads the sim")
        from vlarft.robot_io.sim.scripted_intervener import ScriptedIntervener

        return ScriptedIntervener(env, **kwargs)
    if name == "spacemouse":
        from vlarft.robot_io.teleop.spacemouse import SpaceMouse

        return SpaceMouse(**kwargs)
    if name == "keyboard":
        from vlarft.robot_io.teleop.keyboard import KeyboardTeleop

        return KeyboardTeleop(**kwargs)
    if name == "gamepad":
        from vlarft.robot_io.teleop.gamepad import GamepadTeleop

        return GamepadTeleop(**kwargs)
    raise ValueError(f"unknown teleop device {name!r}; known: {', '.join(DEVICES)}")


def make_device_for(name: str, env: Any, seed: int = 0) -> TeleopDevice:
    """`make_teleop` for a tool driving `env`: scripted devices get the env and a seed, hardware
    devices their default config, both updated by the env's settings for that device
    (`env.unwrapped.teleop_options[name]`, e.g. a Franka task TOML's `[teleop.spacemouse]`)."""
    options = dict(getattr(getattr(env, "unwrapped", env), "teleop_options", {}).get(name, {}))
    if name.startswith("scripted"):
        return make_teleop(name, env=env, seed=seed, **options)
    return make_teleop(name, **options)

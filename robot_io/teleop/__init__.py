"""Teleoperation devices behind one interface: `TeleopDevice.poll() -> TeleopCommand`.

`make_teleop(name, env=None, **kwargs)` builds one of `DEVICES`:
  * `scripted`   - the simulator's `ScriptedOperator(env, **kwargs)`, a stand-in human (needs env);
  * `spacemouse` - 3Dconnexion SpaceMouse over HID (`spacemouse.SpaceMouse`);
  * `keyboard`   - keys in a pygame window with a live camera view (`keyboard.KeyboardTeleop`);
  * `gamepad`    - pygame joystick with a dead-man button, hold RB (`gamepad.GamepadTeleop`).
For the hardware devices `kwargs` are fields of their config dataclass (e.g. `dead_zone=0.1`).

Frame convention of the default mappings: the operator stands BEHIND the robot, looking along the
robot base's +x axis, so +x = away from the operator, +y = to the operator's left, +z = up, and
rotations are right-handed about those axes (+drz = counter-clockwise seen from above).

Hardware devices also implement `sync_gripper(value)`: `InterventionWrapper` calls it while the
policy is in control, so taking over never snaps the gripper to a stale device-side value.

This module also holds the helpers the device modules share (dead zone, axis remapping, gripper
toggling, command building, pygame start-up, config overrides).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from vlarft.robot_io.teleop.base import BUTTONS, TeleopCommand, TeleopDevice

DEVICES = ("scripted", "spacemouse", "keyboard", "gamepad")

MOTION_DIM = 6  # dx dy dz drx dry drz; the 7th action entry is the gripper
GRIPPER_OPEN = -1.0
GRIPPER_CLOSED = 1.0


class DeviceNotAvailableError(RuntimeError):
    """A teleop device could not be found, opened or read; the message says how to fix it."""


def make_teleop(name: str, env: Any = None, **kwargs: Any) -> TeleopDevice:
    """Build the teleop device called `name` (one of `DEVICES`)."""
    if name == "scripted":
        if env is None:
            raise ValueError("make_teleop('scripted') needs env=...: the operator reads the sim")
        from vlarft.robot_io.sim.scripted_operator import ScriptedOperator

        return ScriptedOperator(env, **kwargs)
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


# ----------------------------------------------------------------------------- shared helpers


def clip_unit(values: Any) -> np.ndarray:
    """`values` as float32 clipped into [-1, 1]."""
    return np.clip(np.asarray(values, dtype=np.float32), -1.0, 1.0)


def apply_dead_zone(values: Any, dead_zone: float) -> np.ndarray:
    """Zero every |v| <= dead_zone and rescale the rest so the output stays continuous in [-1, 1].

    v -> sign(v) * (|v| - dead_zone) / (1 - dead_zone); e.g. dead zone 0.1: 0.05 -> 0, 0.5 -> 0.444.
    """
    if not 0.0 <= dead_zone < 1.0:
        raise ValueError(f"dead_zone must be in [0, 1), got {dead_zone}")
    v = np.asarray(values, dtype=np.float64)
    magnitude = np.maximum(np.abs(v) - dead_zone, 0.0) / (1.0 - dead_zone)
    return (np.sign(v) * magnitude).astype(np.float32)


def remap_axes(
    source: Sequence[float], axes: Sequence[int | None], gains: Sequence[float]
) -> np.ndarray:
    """Robot motion from device axes: out[i] = gains[i] * source[axes[i]].

    `axes[i]` None (or beyond the device's axes) leaves robot axis i at 0. Gains carry the sign
    and the sensitivity of each robot axis.
    """
    if len(axes) != MOTION_DIM or len(gains) != MOTION_DIM:
        raise ValueError(f"axes and gains need {MOTION_DIM} entries (dx dy dz drx dry drz)")
    out = np.zeros(MOTION_DIM, np.float32)
    for i, (axis, gain) in enumerate(zip(axes, gains)):
        if axis is not None and 0 <= axis < len(source):
            out[i] = gain * source[axis]
    return out


def toggle_gripper(value: float) -> float:
    """The opposite gripper command: open if (rather) closed, else closed."""
    return GRIPPER_OPEN if value > 0 else GRIPPER_CLOSED


def is_deflected(motion: np.ndarray, threshold: float) -> bool:
    """Whether the motion command's norm exceeds `threshold`."""
    return float(np.linalg.norm(motion)) > threshold


def make_command(
    motion: Any, gripper: float, engaged: bool, buttons: Iterable[str] = ()
) -> TeleopCommand:
    """A command with action [motion, gripper] clipped to [-1, 1]; zero motion unless engaged."""
    motion = np.asarray(motion, np.float32) if engaged else np.zeros(MOTION_DIM, np.float32)
    action = clip_unit(np.append(motion, np.float32(gripper)))
    return TeleopCommand(action=action, engaged=bool(engaged), buttons=frozenset(buttons))


def check_button_events(events: Mapping[Any, str]) -> None:
    """Raise ValueError if a button-event mapping names an unknown event."""
    unknown = sorted(set(events.values()) - BUTTONS)
    if unknown:
        raise ValueError(f"unknown button events {unknown}; known: {sorted(BUTTONS)}")


def config_with(config_cls: type, config: Any, overrides: Mapping[str, Any]) -> Any:
    """`config` (default `config_cls()`) with `overrides` replacing fields; typos: TypeError."""
    config = config_cls() if config is None else config
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        name = config_cls.__name__
        raise TypeError(f"{name} has no field(s) {unknown}; its fields: {sorted(fields)}")
    return dataclasses.replace(config, **overrides)


def import_pygame():
    """Import pygame without its banner; return the module."""
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    import pygame

    return pygame


def init_pygame(allow_dummy_video: bool = False):
    """Import pygame and start its display (needed for events); return the module.

    With `allow_dummy_video`, fall back to SDL's dummy video driver when there is no display
    (fine for joysticks, useless for a keyboard window).
    """
    pygame = import_pygame()
    try:
        pygame.display.init()
    except pygame.error:
        if not allow_dummy_video or os.environ.get("SDL_VIDEODRIVER"):
            raise
        os.environ["SDL_VIDEODRIVER"] = "dummy"
        pygame.display.init()
    return pygame


def console_preview(
    device: TeleopDevice, hz: float = 10.0, raw: Callable[[], str] | None = None
) -> None:
    """Print the device's commands (and `raw()` if given) at `hz` until Ctrl-C, then close it."""
    try:
        while True:
            cmd = device.poll()
            prefix = f"{raw()} -> " if raw else ""
            action = np.round(cmd.action, 2)
            print(f"{prefix}engaged={int(cmd.engaged)} action={action} {sorted(cmd.buttons)}")
            time.sleep(1.0 / hz)
    except KeyboardInterrupt:
        pass
    finally:
        device.close()

"""Gamepad teleop via pygame's joystick API, with a dead-man button.

HOLD RB (the right bumper, the dead-man button) TO TAKE CONTROL: the robot follows the sticks and
triggers only while RB is held, and control goes back to the policy the moment RB is released
(sticks alone do nothing). The event buttons work whether RB is held or not.

Default mapping (`GamepadConfig()`: Xbox-style pad, SDL's Linux/xpad numbering; robot frame as in
`vlarft.robot_io.teleop`, i.e. the operator stands behind the robot):
  left stick   up/down +x/-x, left/right +y/-y     right stick  up/down +z/-z, left/right +yaw/-yaw
  RT (axis 5)  close gripper    LT (axis 2)  open gripper    LB  toggle gripper
  A success    B failure    X re-record    Y end episode    Start pause    RB (held) dead-man
The gripper value is kept between polls. SDL numbers axes and buttons differently across pads and
OSes (e.g. triggers on axes 4/5 and the right stick on 2/3): run
`python -m vlarft.robot_io.teleop.gamepad` to see the raw numbers, then set `GamepadConfig`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vlarft.robot_io.teleop.common import (
    GRIPPER_CLOSED,
    GRIPPER_OPEN,
    MOTION_DIM,
    DeviceNotAvailableError,
    apply_dead_zone,
    check_button_events,
    config_with,
    console_preview,
    import_pygame,
    init_pygame,
    make_command,
    remap_axes,
    toggle_gripper,
)
from vlarft.robot_io.teleop.base import (
    END_EPISODE,
    FAILURE,
    PAUSE,
    RERECORD,
    SUCCESS,
    TeleopCommand,
)

pygame = import_pygame()

# Joystick events drained at every poll (left undrained, SDL's queue would fill up).
_JOYSTICK_EVENTS = [
    pygame.JOYAXISMOTION, pygame.JOYBALLMOTION, pygame.JOYHATMOTION, pygame.JOYBUTTONDOWN,
    pygame.JOYBUTTONUP, pygame.JOYDEVICEADDED, pygame.JOYDEVICEREMOVED,
]

GAMEPAD_HELP = (
    "Gamepad teleop: HOLD RB (dead-man button) to take control - the robot ignores the sticks "
    "unless RB is held, and the policy resumes when you release it. Left stick = x/y, right "
    "stick = z/yaw, RT closes / LT opens / LB toggles the gripper; A success, B failure, "
    "X re-record, Y end episode, Start pause."
)


@dataclasses.dataclass(frozen=True)
class GamepadConfig:
    """Gamepad settings (indices are pygame joystick axis / button numbers).

    Attributes:
      index: which joystick to open.
      axes: for each robot axis (dx dy dz drx dry drz), the stick axis driving it, or None.
      gains: sign and sensitivity of each robot axis (stick up reads negative in SDL).
      dead_zone: per-axis stick dead zone (`apply_dead_zone`).
      deadman_button: the button that must be HELD for the robot to follow the pad (RB).
      close_axis, open_axis: trigger axes (rest -1, pulled +1) that close / open the gripper
        when above `trigger_threshold`; None = unused.
      trigger_threshold: trigger value counting as pulled.
      toggle_button: button toggling the gripper (LB), or None.
      button_events: button -> event name, sent on press (edge), dead-man or not.
    """

    index: int = 0
    axes: tuple[int | None, ...] = (1, 0, 4, None, None, 3)
    gains: tuple[float, ...] = (-1.0, -1.0, -1.0, 0.0, 0.0, -1.0)
    dead_zone: float = 0.15
    deadman_button: int = 5
    close_axis: int | None = 5
    open_axis: int | None = 2
    trigger_threshold: float = 0.5
    toggle_button: int | None = 4
    button_events: Mapping[int, str] = dataclasses.field(
        default_factory=lambda: {0: SUCCESS, 1: FAILURE, 2: RERECORD, 3: END_EPISODE, 7: PAUSE})


def _value(values: Sequence[float], index: int | None, default: float = 0.0) -> float:
    return float(values[index]) if index is not None and 0 <= index < len(values) else default


def gamepad_command(
    axes: Sequence[float], buttons: Sequence[bool], pressed: Sequence[int], gripper: float,
    config: GamepadConfig,
) -> TeleopCommand:
    """Pure mapping of one joystick reading to a command.

    Args:
      axes: current axis values in [-1, 1]; buttons: current held state per button;
      pressed: buttons pressed since the last poll; gripper: previous gripper value
      (the new one is `command.action[6]`); config: the mapping.
    """
    events = {config.button_events[b] for b in pressed if b in config.button_events}
    if not _value(buttons, config.deadman_button):
        return make_command(np.zeros(MOTION_DIM), gripper, False, events)
    motion = remap_axes(apply_dead_zone(axes, config.dead_zone), config.axes, config.gains)
    if _value(axes, config.close_axis, -1.0) > config.trigger_threshold:
        gripper = GRIPPER_CLOSED
    elif _value(axes, config.open_axis, -1.0) > config.trigger_threshold:
        gripper = GRIPPER_OPEN
    if config.toggle_button is not None and config.toggle_button in pressed:
        gripper = toggle_gripper(gripper)
    return make_command(motion, gripper, True, events)


def open_joystick(index: int = 0) -> Any:
    """Open pygame joystick `index`; DeviceNotAvailableError (with help) if there is none."""
    init_pygame(allow_dummy_video=True)
    pygame.joystick.init()
    count = pygame.joystick.get_count()
    if index >= count:
        raise DeviceNotAvailableError(
            f"No gamepad at index {index}: pygame sees {count} joystick(s). Plug in / pair the pad "
            "(on Linux it should show up as /dev/input/js*, readable by your user).\n"
            + GAMEPAD_HELP)
    joystick = pygame.joystick.Joystick(index)
    joystick.init()
    return joystick


class GamepadTeleop:
    """Gamepad `TeleopDevice`; hold RB (dead-man) to take control (see the module docstring).

    Args:
      config: settings (default `GamepadConfig()`); `**overrides` replace its fields.
      joystick: an open joystick (anything with get_numaxes/get_axis/get_numbuttons/get_button);
        None opens `config.index` with pygame.
    """

    def __init__(
        self, config: GamepadConfig | None = None, *, joystick: Any = None, **overrides: Any
    ) -> None:
        self.config = config_with(GamepadConfig, config, overrides)
        check_button_events(self.config.button_events)
        self._uses_pygame_events = joystick is None
        self.joystick = joystick if joystick is not None else open_joystick(self.config.index)
        self.axes: list[float] = []  # latest raw reading, for previews and debugging
        self.buttons: list[bool] = []
        self._gripper = GRIPPER_OPEN

    def reset(self) -> None:
        """The gripper starts open, like the robot's."""
        self._gripper = GRIPPER_OPEN

    def poll(self) -> TeleopCommand:
        """Read the pad and return this step's command (never blocks)."""
        pressed = self._pressed_from_events() if self._uses_pygame_events else set()
        previous = self.buttons
        js = self.joystick
        self.axes = [float(js.get_axis(i)) for i in range(js.get_numaxes())]
        self.buttons = [bool(js.get_button(i)) for i in range(js.get_numbuttons())]
        pressed |= {i for i, held in enumerate(self.buttons) if held and not _value(previous, i)}
        command = gamepad_command(
            self.axes, self.buttons, sorted(pressed), self._gripper, self.config)
        self._gripper = float(command.action[-1])
        return command

    def _pressed_from_events(self) -> set[int]:
        """Drain joystick events (catches taps between polls); raise if the pad was unplugged."""
        pressed = set()
        for event in pygame.event.get(_JOYSTICK_EVENTS):
            if getattr(event, "instance_id", None) != self.joystick.get_instance_id():
                continue
            if event.type == pygame.JOYDEVICEREMOVED:
                raise DeviceNotAvailableError("the gamepad was disconnected.\n" + GAMEPAD_HELP)
            if event.type == pygame.JOYBUTTONDOWN:
                pressed.add(event.button)
        return pressed

    def sync_gripper(self, value: float) -> None:
        """Track the gripper command the robot executes while the human is not engaged."""
        self._gripper = float(value)

    def close(self) -> None:
        """Release the joystick."""
        if self._uses_pygame_events:
            self.joystick.quit()


def main() -> None:
    """Print raw axes / held buttons and the resulting command, to set up `GamepadConfig`."""
    pad = GamepadTeleop()
    print(GAMEPAD_HELP)
    console_preview(pad, raw=lambda: f"axes={np.round(pad.axes, 2)} "
                                     f"held={[i for i, b in enumerate(pad.buttons) if b]}")


if __name__ == "__main__":
    main()

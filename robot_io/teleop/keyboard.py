"""Keyboard teleop in a small pygame window that also shows the latest camera images.

Keys (`KEYMAP`; hold a motion key to move; robot frame as in `vlarft.robot_io.teleop`, i.e.
the operator stands behind the robot):
  W / S   +x / -x   (away from / towards the operator)
  A / D   +y / -y   (left / right)
  R / F   +z / -z   (up / down)
  Q / E   +yaw / -yaw (counter-clockwise / clockwise seen from above)
  J / L   +roll / -roll         I / K   +pitch / -pitch
  Space   toggle the gripper (open <-> closed; starts open after every reset)
  Enter = success, Backspace = failure, Esc = end episode, Tab / Delete = re-record, P = pause
Engaged while a motion key is held (or was tapped since the last poll) or when the gripper was
toggled this step. Keys only reach the focused window (click it first); losing focus releases
all keys, and closing the window counts as end episode. Letter keys follow the keyboard layout.

Event handling is the pure function `map_key_events` (tests feed it pygame events); the window
(`KeyboardTeleop`) only collects events and draws. Call `show(observation)` for a live view.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from vlarft.robot_io.contract import ACTION_NAMES
from vlarft.robot_io.teleop.common import (
    GRIPPER_OPEN,
    MOTION_DIM,
    config_with,
    import_pygame,
    init_pygame,
    make_command,
    toggle_gripper,
)
from vlarft.robot_io.teleop.base import (
    BUTTONS,
    END_EPISODE,
    FAILURE,
    PAUSE,
    RERECORD,
    SUCCESS,
    TeleopCommand,
    idle_command,
)

pygame = import_pygame()

GRIPPER = "gripper"
# pygame key code -> "+<axis>" / "-<axis>" (axis in dx dy dz drx dry drz), "gripper" or an event.
KEYMAP: dict[int, str] = {
    pygame.K_w: "+dx", pygame.K_s: "-dx",
    pygame.K_a: "+dy", pygame.K_d: "-dy",
    pygame.K_r: "+dz", pygame.K_f: "-dz",
    pygame.K_q: "+drz", pygame.K_e: "-drz",
    pygame.K_j: "+drx", pygame.K_l: "-drx",
    pygame.K_i: "+dry", pygame.K_k: "-dry",
    pygame.K_SPACE: GRIPPER,
    pygame.K_RETURN: SUCCESS, pygame.K_KP_ENTER: SUCCESS,
    pygame.K_BACKSPACE: FAILURE,
    pygame.K_ESCAPE: END_EPISODE,
    pygame.K_TAB: RERECORD, pygame.K_DELETE: RERECORD,
    pygame.K_p: PAUSE,
}

HELP_LINES = (
    "W/S x  A/D y  R/F z  Q/E yaw  J/L roll  I/K pitch  Space gripper",
    "Enter success  Backspace failure  Esc end  Tab/Del re-record  P pause",
)


@dataclasses.dataclass(frozen=True)
class KeyboardConfig:
    """Keyboard settings.

    Attributes:
      translation_speed: action value of a held translation key (normalised units, <= 1).
      rotation_speed: action value of a held rotation key.
      keymap: pygame key code -> "+dx" ... "-drz", "gripper" or an event name (see `KEYMAP`).
      window_size: (width, height) of the window in pixels.
      caption: window title.
    """

    translation_speed: float = 0.5
    rotation_speed: float = 0.5
    keymap: Mapping[int, str] = dataclasses.field(default_factory=lambda: dict(KEYMAP))
    window_size: tuple[int, int] = (640, 400)
    caption: str = "vlarft keyboard teleop"


def _motion_axis(name: str) -> tuple[int, float] | None:
    """(axis index, sign) of a motion key name such as "-dz", else None."""
    if name[:1] in "+-" and name[1:] in ACTION_NAMES[:MOTION_DIM]:
        return ACTION_NAMES.index(name[1:]), (1.0 if name[0] == "+" else -1.0)
    return None


def check_keymap(keymap: Mapping[int, str]) -> None:
    """Raise ValueError on a keymap entry that is neither motion, gripper nor an event."""
    bad = {k: v for k, v in keymap.items()
           if v != GRIPPER and v not in BUTTONS and not _motion_axis(v)}
    if bad:
        raise ValueError(
            f"bad keymap entries {bad}: use '+dx'..'-drz', {GRIPPER!r} or {sorted(BUTTONS)}")


def _motion(keys: Iterable[int], config: KeyboardConfig) -> np.ndarray:
    motion = np.zeros(MOTION_DIM, np.float32)
    for key in keys:
        axis_sign = _motion_axis(config.keymap.get(key, ""))
        if axis_sign:
            axis, sign = axis_sign
            motion[axis] += sign * (config.translation_speed if axis < 3 else config.rotation_speed)
    return motion


def map_key_events(
    events: Iterable[Any], held: frozenset[int], gripper: float, config: KeyboardConfig
) -> tuple[TeleopCommand, frozenset[int]]:
    """Pure: pygame events since the last poll -> (command, motion keys still held).

    `held` are the motion keys held after the previous poll and `gripper` the previous gripper
    value (the new one is `command.action[6]`).
    """
    held, tapped, events_out, toggled = set(held), set(), set(), False
    for event in events:
        name = config.keymap.get(getattr(event, "key", None), "")
        if event.type == pygame.KEYDOWN and _motion_axis(name):
            held.add(event.key)
            tapped.add(event.key)
        elif event.type == pygame.KEYDOWN and name == GRIPPER:
            gripper, toggled = toggle_gripper(gripper), True
        elif event.type == pygame.KEYDOWN and name in BUTTONS:
            events_out.add(name)
        elif event.type == pygame.KEYUP:
            held.discard(event.key)
        elif event.type == pygame.WINDOWFOCUSLOST:
            held.clear()
        elif event.type == pygame.QUIT:
            events_out.add(END_EPISODE)
    active = held | tapped
    engaged = bool(active) or toggled
    return make_command(_motion(active, config), gripper, engaged, events_out), frozenset(held)


class KeyboardTeleop:
    """Keyboard `TeleopDevice` with a pygame window (needs a display, or SDL_VIDEODRIVER=dummy).

    Args:
      config: settings (default `KeyboardConfig()`); `**overrides` replace its fields.
    """

    def __init__(self, config: KeyboardConfig | None = None, **overrides: Any) -> None:
        self.config = config_with(KeyboardConfig, config, overrides)
        check_keymap(self.config.keymap)
        init_pygame()
        pygame.font.init()
        self._screen = pygame.display.set_mode(self.config.window_size)
        pygame.display.set_caption(self.config.caption)
        self._font = pygame.font.Font(None, 20)
        self._images: dict[str, np.ndarray] = {}
        self._held: frozenset[int] = frozenset()
        self._gripper = GRIPPER_OPEN
        self._last = idle_command()
        self._draw()

    def reset(self) -> None:
        """Release all keys; the gripper starts open, like the robot's."""
        self._held = frozenset()
        self._gripper = GRIPPER_OPEN

    def poll(self) -> TeleopCommand:
        """Handle the window's pending events and return this step's command."""
        self._last, self._held = map_key_events(
            pygame.event.get(), self._held, self._gripper, self.config)
        self._gripper = float(self._last.action[-1])
        self._draw()
        return self._last

    def sync_gripper(self, value: float) -> None:
        """Track the gripper command the robot executes while the human is not engaged."""
        self._gripper = float(value)

    def show(self, observation: Mapping[str, Any]) -> None:
        """Show the observation's camera images (`image_<camera>` keys) in the window."""
        self._images = {k[len("image_"):]: np.asarray(v) for k, v in observation.items()
                        if k.startswith("image_")}
        self._draw()

    def close(self) -> None:
        """Close the window."""
        pygame.display.quit()

    @property
    def screen(self):
        """The window surface (tests inspect its pixels)."""
        return self._screen

    def _draw(self) -> None:
        width, height = self.config.window_size
        text_height = 20 * (len(HELP_LINES) + 1) + 6
        self._screen.fill((20, 20, 20))
        self._draw_images(width, height - text_height)
        status = "   ".join([
            "ENGAGED" if self._last.engaged else "idle",
            f"gripper {'closed' if self._gripper > 0 else 'open'}",
            " ".join(sorted(self._last.buttons)),
        ])
        for i, line in enumerate((status, *HELP_LINES)):
            text = self._font.render(line, True, (230, 230, 230))
            self._screen.blit(text, (6, height - text_height + 4 + 20 * i))
        pygame.display.flip()

    def _draw_images(self, width: int, height: int) -> None:
        if not self._images or height <= 0:
            return
        tile_w = width // len(self._images)
        for i, (camera, image) in enumerate(sorted(self._images.items())):
            h, w = image.shape[:2]
            scale = min(tile_w / w, height / h)
            size = (max(1, int(w * scale)), max(1, int(h * scale)))
            pixels = np.ascontiguousarray(image[..., :3].swapaxes(0, 1))  # surfarray is (x, y)
            surface = pygame.transform.scale(pygame.surfarray.make_surface(pixels), size)
            self._screen.blit(surface, (i * tile_w, 0))
            self._screen.blit(self._font.render(camera, True, (255, 255, 0)), (i * tile_w + 4, 4))

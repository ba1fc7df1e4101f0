"""Helpers shared by the teleop device modules: dead zone, axis remapping, gripper toggling,
command building, config overrides, pygame start-up and a console preview."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from vlarft.robot_io.teleop.base import BUTTONS, TeleopCommand, TeleopDevice

MOTION_DIM = 6  # dx dy dz drx dry drz; the 7th action entry is the gripper
GRIPPER_OPEN = -1.0
GRIPPER_CLOSED = 1.0


class DeviceNotAvailableError(RuntimeError):
    """A teleop device could not be found, opened or read; the message says how to fix it."""


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

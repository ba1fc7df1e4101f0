"""3Dconnexion SpaceMouse over raw HID (`hidapi`), hold-to-intervene like HIL-SERL.

HID input reports (first byte = report id, values int16 little-endian):
  * id 1: translation x, y, z (7 bytes); newer / wireless models send 13 bytes with the
    rotation rx, ry, rz appended;
  * id 2: rotation rx, ry, rz (7 bytes, older models);
  * id 3: button bitmask (bit 0 = left button, bit 1 = right button; on Pro models bit 0 = MENU,
    bit 1 = FIT).
Device frame (raw HID): x = push right, y = pull towards you, z = push down; rx, ry, rz
right-handed about those. Values reach about +-350 at full deflection (`full_scale`).

Default mapping (`SpaceMouseConfig()`, operator behind the robot, see `vlarft.robot_io.teleop`):
  dx = -y (push away), dy = -x (push left), dz = -z (lift up),
  drx = -ry, dry = -rx, drz = -rz (twist counter-clockwise).
`SpaceMouseConfig.facing_robot()` is the mapping for an operator facing the robot (HIL-SERL's
Franka setup): dx = y, dy = x, dz = -z, drx = ry, dry = rx, drz = -rz. Check the signs on your
setup with `python -m vlarft.robot_io.teleop.spacemouse` and change `axes` / `gains`.

Gripper: the left button closes, the right button opens (`toggle_gripper=True`: left toggles);
the value is kept between polls. Engaged while the cap is deflected (norm of the mapped motion
above `engage_threshold`) or a gripper button is held or was pressed since the last poll.
A background thread reads the device; `poll()` returns the latest state and never blocks.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from vlarft.robot_io.teleop.common import (
    GRIPPER_CLOSED,
    GRIPPER_OPEN,
    DeviceNotAvailableError,
    apply_dead_zone,
    check_button_events,
    config_with,
    console_preview,
    is_deflected,
    make_command,
    remap_axes,
    toggle_gripper,
)
from vlarft.robot_io.teleop.base import TeleopCommand

# (vendor id, product id) -> model name.
KNOWN_DEVICES: dict[tuple[int, int], str] = {
    (0x256F, 0xC62E): "SpaceMouse Wireless (cabled)",
    (0x256F, 0xC62F): "SpaceMouse Wireless (receiver)",
    (0x256F, 0xC631): "SpaceMouse Pro Wireless (cabled)",
    (0x256F, 0xC632): "SpaceMouse Pro Wireless (receiver)",
    (0x256F, 0xC633): "SpaceMouse Enterprise",
    (0x256F, 0xC635): "SpaceMouse Compact",
    (0x256F, 0xC638): "SpaceMouse Pro Wireless (Bluetooth)",
    (0x256F, 0xC63A): "SpaceMouse Wireless (new)",
    (0x256F, 0xC641): "SpaceMouse USB",
    (0x256F, 0xC652): "3Dconnexion Universal Receiver",
    (0x046D, 0xC625): "SpacePilot",
    (0x046D, 0xC626): "SpaceNavigator",
    (0x046D, 0xC627): "SpaceExplorer",
    (0x046D, 0xC628): "SpaceNavigator for Notebooks",
    (0x046D, 0xC629): "SpacePilot Pro",
    (0x046D, 0xC62B): "SpaceMouse Pro",
}

LINUX_PERMISSION_HELP = """\
On Linux, reading /dev/hidraw* needs permission. Add a udev rule, e.g.
  echo 'KERNEL=="hidraw*", ATTRS{idVendor}=="256f", MODE="0666", GROUP="plugdev"' \\
    | sudo tee /etc/udev/rules.d/99-spacemouse.rules
(add a second line with ATTRS{idVendor}=="046d" for older Logitech-branded models), then
  sudo udevadm control --reload-rules && sudo udevadm trigger
and unplug / replug the device (or its receiver). If you use GROUP="plugdev", make sure you are
in it (sudo usermod -aG plugdev $USER, then log in again). Also quit 3DxWare / other programs
that hold the device."""

# Device axes are indexed 0..5 = x y z rx ry rz (raw HID frame, see the module docstring).
_BEHIND_ROBOT = ((1, 0, 2, 4, 3, 5), (-1.0, -1.0, -1.0, -1.0, -1.0, -1.0))
_FACING_ROBOT = ((1, 0, 2, 4, 3, 5), (1.0, 1.0, -1.0, 1.0, 1.0, -1.0))


@dataclasses.dataclass(frozen=True)
class SpaceMouseConfig:
    """SpaceMouse settings.

    Attributes:
      path: HID path to open (as in `hid.enumerate()`); None = the first known device found.
      full_scale: raw counts at full deflection; raw / full_scale is clipped to [-1, 1].
      dead_zone: per-axis dead zone on normalised values (`apply_dead_zone`).
      engage_threshold: engaged when the norm of the mapped 6-D motion exceeds this.
      axes: for each robot axis (dx dy dz drx dry drz), the device axis driving it
        (0..5 = x y z rx ry rz), or None for none.
      gains: sign and sensitivity of each robot axis.
      close_button, open_button: button bits that close / open the gripper (0 = left, 1 = right).
      toggle_gripper: the close button toggles the gripper instead of closing it.
      button_events: extra button bits -> event names (e.g. {12: "success"} on a SpaceMouse Pro).
      read_size: bytes asked for per HID read (>= the longest report).
      read_timeout_ms: HID read timeout of the reader thread (bounds how long `close()` takes).
    """

    path: bytes | str | None = None
    full_scale: float = 350.0
    dead_zone: float = 0.05
    engage_threshold: float = 0.1
    axes: tuple[int | None, ...] = _BEHIND_ROBOT[0]
    gains: tuple[float, ...] = _BEHIND_ROBOT[1]
    close_button: int = 0
    open_button: int = 1
    toggle_gripper: bool = False
    button_events: Mapping[int, str] = dataclasses.field(default_factory=dict)
    read_size: int = 64
    read_timeout_ms: int = 50

    @classmethod
    def facing_robot(cls, **overrides: Any) -> "SpaceMouseConfig":
        """Config for an operator facing the robot (HIL-SERL's Franka mapping)."""
        return cls(axes=_FACING_ROBOT[0], gains=_FACING_ROBOT[1], **overrides)


@dataclasses.dataclass(frozen=True)
class SpaceMouseState:
    """Latest raw device state: axes (x y z rx ry rz, int16 counts) and the button bitmask."""

    axes: tuple[int, ...] = (0, 0, 0, 0, 0, 0)
    buttons: int = 0


class HidLike(Protocol):
    """The part of `hid.device` the reader uses (tests inject fakes)."""

    def read(self, size: int, timeout_ms: int) -> Sequence[int]: ...

    def close(self) -> None: ...


# ----------------------------------------------------------------------------- pure parsing


def _int16s(data: Sequence[int]) -> tuple[int, ...]:
    return tuple(int(v) for v in np.frombuffer(bytes(data), dtype="<i2"))


def parse_report(report: Sequence[int], state: SpaceMouseState) -> SpaceMouseState:
    """The state after one HID input report (unknown or short reports leave it unchanged)."""
    if len(report) < 2:
        return state
    report_id = report[0]
    if report_id == 1 and len(report) >= 7:
        rotation = _int16s(report[7:13]) if len(report) >= 13 else state.axes[3:]
        return dataclasses.replace(state, axes=_int16s(report[1:7]) + rotation)
    if report_id == 2 and len(report) >= 7:
        return dataclasses.replace(state, axes=state.axes[:3] + _int16s(report[1:7]))
    if report_id == 3:
        return dataclasses.replace(state, buttons=int.from_bytes(bytes(report[1:]), "little"))
    return state


def normalise(axes: Sequence[int], full_scale: float) -> np.ndarray:
    """Raw counts -> [-1, 1] (e.g. 175 / 350 = 0.5)."""
    return np.clip(np.asarray(axes, np.float32) / full_scale, -1.0, 1.0)


def pressed_buttons(old_mask: int, new_mask: int) -> list[int]:
    """Bit indices that went from released to pressed."""
    pressed = new_mask & ~old_mask
    return [bit for bit in range(pressed.bit_length()) if pressed >> bit & 1]


def _gripper_after(gripper: float, presses: Sequence[int], config: SpaceMouseConfig) -> float:
    for bit in presses:  # in press order: the last press wins
        if bit == config.close_button:
            gripper = toggle_gripper(gripper) if config.toggle_gripper else GRIPPER_CLOSED
        elif bit == config.open_button:
            gripper = GRIPPER_OPEN
    return gripper


def spacemouse_command(
    state: SpaceMouseState, presses: Sequence[int], gripper: float, config: SpaceMouseConfig
) -> TeleopCommand:
    """The command for the latest `state` and the buttons pressed since the last poll.

    `gripper` is the previous gripper value; the new one is `command.action[6]`.
    """
    deflection = apply_dead_zone(normalise(state.axes, config.full_scale), config.dead_zone)
    motion = remap_axes(deflection, config.axes, config.gains)
    gripper_buttons = (config.close_button, config.open_button)
    held = any(state.buttons >> bit & 1 for bit in gripper_buttons)
    touched = held or any(bit in gripper_buttons for bit in presses)
    events = {config.button_events[b] for b in presses if b in config.button_events}
    engaged = is_deflected(motion, config.engage_threshold) or touched
    return make_command(motion, _gripper_after(gripper, presses, config), engaged, events)


# ----------------------------------------------------------------------------- opening


def find_spacemouse(devices: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The first known SpaceMouse in `hid.enumerate()` output (its multi-axis interface if any)."""
    known = [d for d in devices if (d.get("vendor_id"), d.get("product_id")) in KNOWN_DEVICES]
    multi_axis = [d for d in known if (d.get("usage_page"), d.get("usage")) == (1, 8)]
    return (multi_axis or known or [None])[0]


def describe_hid_devices(devices: Sequence[Mapping[str, Any]]) -> str:
    """One line per HID device: vid:pid, names and path."""
    if not devices:
        return "  (none - hid.enumerate() returned nothing)"
    lines = []
    for d in devices:
        names = " ".join(filter(None, [d.get("manufacturer_string"), d.get("product_string")]))
        lines.append(f"  {d.get('vendor_id', 0):04x}:{d.get('product_id', 0):04x} {names or '?'} "
                     f"path={d.get('path')!r}")
    return "\n".join(lines)


def _describe(info: Mapping[str, Any]) -> str:
    vid, pid = info.get("vendor_id", 0), info.get("product_id", 0)
    name = KNOWN_DEVICES.get((vid, pid), "HID device")
    return f"{name} {vid:04x}:{pid:04x} at path {info.get('path')!r}"


def open_spacemouse(path: bytes | str | None = None, hid_api: Any = None) -> Any:
    """Open a SpaceMouse (the first known one, or `path`) with hidapi; return the `hid.device`.

    Raises DeviceNotAvailableError naming the device tried, the fix for Linux permissions and the
    HID devices that are visible. `hid_api` defaults to the `hid` module (tests inject fakes).
    """
    if hid_api is None:
        import hid as hid_api
    devices = list(hid_api.enumerate())
    if path is None:
        info = find_spacemouse(devices)
        if info is None:
            known = ", ".join(f"{v:04x}:{p:04x}" for v, p in KNOWN_DEVICES)
            raise DeviceNotAvailableError(
                f"No SpaceMouse found (looked for vendor:product {known}).\n"
                f"HID devices visible:\n{describe_hid_devices(devices)}\n"
                "Plug the SpaceMouse (or its wireless receiver) in, or pass path=...\n"
                + LINUX_PERMISSION_HELP)
        path, tried = info["path"], _describe(info)
    else:
        tried = f"HID device at path {path!r}"
    device = hid_api.device()
    try:
        device.open_path(path.encode() if isinstance(path, str) else path)
    except OSError as err:
        raise DeviceNotAvailableError(
            f"Could not open {tried}: {err}.\n{LINUX_PERMISSION_HELP}\n"
            f"HID devices visible:\n{describe_hid_devices(devices)}") from err
    return device


# ----------------------------------------------------------------------------- device


class SpaceMouse:
    """A SpaceMouse as a `TeleopDevice` (see the module docstring for mapping and buttons).

    Args:
      config: settings (default `SpaceMouseConfig()`); `**overrides` replace its fields.
      device: an already open HID device (anything with `read(size, timeout_ms)` and `close()`);
        None opens one with `open_spacemouse(config.path, hid_api)`.
      hid_api: the hidapi module to use when opening (default `hid`).
    """

    def __init__(self, config: SpaceMouseConfig | None = None, *, device: HidLike | None = None,
                 hid_api: Any = None, **overrides: Any) -> None:
        self.config = config_with(SpaceMouseConfig, config, overrides)
        check_button_events(self.config.button_events)
        self._device = device if device is not None else open_spacemouse(self.config.path, hid_api)
        self._lock = threading.Lock()
        self._state = SpaceMouseState()
        self._presses: list[int] = []
        self._error: BaseException | None = None
        self._gripper = GRIPPER_OPEN
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._read_loop, name="spacemouse-reader", daemon=True)
        self._thread.start()

    def _read_loop(self) -> None:
        while not self._stop.is_set():
            try:
                report = self._device.read(self.config.read_size, self.config.read_timeout_ms)
            except Exception as err:  # unplugged, closed, ...
                self._error = err
                return
            if report:
                self._ingest(report)

    def _ingest(self, report: Sequence[int]) -> None:
        with self._lock:
            new = parse_report(report, self._state)
            self._presses += pressed_buttons(self._state.buttons, new.buttons)
            self._state = new

    @property
    def state(self) -> SpaceMouseState:
        """The latest raw state read from the device."""
        return self._state

    def reset(self) -> None:
        """Forget presses not yet polled; the gripper starts open, like the robot's."""
        with self._lock:
            self._presses.clear()
        self._gripper = GRIPPER_OPEN

    def poll(self) -> TeleopCommand:
        """The command for the latest device state (never blocks)."""
        if self._error is not None:
            raise DeviceNotAvailableError(f"SpaceMouse read failed (unplugged?): {self._error!r}")
        with self._lock:
            state, presses, self._presses = self._state, self._presses, []
        command = spacemouse_command(state, presses, self._gripper, self.config)
        self._gripper = float(command.action[-1])
        return command

    def sync_gripper(self, value: float) -> None:
        """Track the gripper command the robot executes while the human is not engaged."""
        self._gripper = float(value)

    def close(self) -> None:
        """Stop the reader thread and close the HID device (idempotent)."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=1.0 + self.config.read_timeout_ms / 1000)
        self._device.close()


if __name__ == "__main__":
    _mouse = SpaceMouse()
    console_preview(_mouse, raw=lambda: f"raw={_mouse.state.axes} "
                                        f"buttons={_mouse.state.buttons:#x}")

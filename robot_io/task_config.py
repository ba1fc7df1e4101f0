"""`TaskConfig`: one real-robot task (server, cameras, workspace, reset, control, reward) from TOML.

    config = load_task_config("pick_place")                    # bundled: robot_io/tasks/pick_place.toml
    config = load_task_config("/lab/tasks/my_task.toml", server_url="http://172.16.0.1:5000/")

A task file is one flat TOML table whose keys are `TaskConfig` fields, plus `[[cameras]]` tables
(`CameraConfig` fields), the `[precision_params]` / `[compliance_params]` tables of controller
parameters and optional `[teleop.<device>]` tables (the lab's teleop device settings, e.g.
`[teleop.spacemouse]` with `button_events = {12 = "success"}`). Unknown keys are refused;
`REQUIRED_KEYS` must be present (no silent defaults for the workspace or the server). Controller
parameters must be ones the Franka server knows, inside the range it accepts
(`franka.client.CONTROLLER_PARAMS`; a typo is named with its likely spelling); a RealSense or
OpenCV camera needs its `device`, each device used once; `pos_scale` / `rot_scale` are bounded by
`MAX_POS_SCALE` / `MAX_ROT_SCALE` per step. Every error names the file and the field. Whether the
cameras are the ones a policy needs is checked where a policy meets the env
(`contract.require_cameras`).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import tomllib
from pathlib import Path
from typing import Any

from vlarft.robot_io.cameras import CameraConfig

TASKS_DIR = Path(__file__).parent / "tasks"

ACTION_FRAMES = ("reset", "tcp", "base")
RESET_GRIPPER = ("open", "closed", "keep")
REWARD_SOURCES = ("operator", "classifier")
MAX_POS_SCALE = 0.1  # m of TCP translation per unit action per step
MAX_ROT_SCALE = 0.5  # rad of TCP rotation per unit action per step
REQUIRED_KEYS = ("instruction", "server_url", "cameras", "reset_pose", "xyz_low", "xyz_high",
                 "euler_low", "euler_high")


class TaskConfigError(ValueError):
    """A task config is malformed; the message names the file (if any) and the field."""


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    """A real-robot task (Franka through the HIL-SERL HTTP server).

    Attributes:
      name: task name recorded with every episode (default: the TOML file's stem).
      instruction: natural-language instruction of the task.
      server_url: base URL of the Franka server, ending with '/'.
      cameras: the cameras (`CameraConfig`); observation keys are `image_<name>`.
      control_hz: control frequency, Hz.
      max_episode_steps: time limit in control steps (then `truncated`).
      pos_scale: TCP translation per unit action per step, m.
      rot_scale: TCP rotation per unit action per step, rad.
      gripper_threshold: gripper action at or above it closes, at or below minus it opens.
      action_frame: frame of the translation/rotation action: `reset` (the episode's reset-pose
        orientation, fixed for the episode), `tcp` (the measured TCP orientation at each step) or
        `base` (the robot base frame).
      gripper_enabled: False = the gripper action is ignored (e.g. a peg held throughout).
      gripper_sleep_s: minimum time between two gripper commands, s.
      xyz_low / xyz_high: TCP target position box, m (base frame).
      euler_low / euler_high: TCP target orientation box, extrinsic xyz Euler angles, rad; bounds
        may leave [-π, π] (a box around roll = π), each range spans at most 2π.
      reset_pose: reset TCP pose (x, y, z, roll, pitch, yaw), inside the box.
      reset_xy_range: reset x and y are drawn uniformly in ± this, m.
      reset_z_range: reset z is drawn uniformly in ± this, m.
      reset_yaw_range: reset yaw (about the base z axis) is drawn uniformly in ± this, rad.
      reset_gripper: gripper at reset: `open`, `closed` or `keep`.
      reset_move_s: duration of the interpolated move to the reset pose, s.
      reset_pause_s: pause after each controller mode switch at reset, s.
      joint_reset_every: a joint reset on every N-th reset (0 = never).
      joint_reset_timeout_s: how long a `jointreset` may take, s.
      precision_params: controller parameters posted (`update_param`) before the reset move.
      compliance_params: controller parameters posted after the reset move (used while acting).
      reward_source: `operator` (success only through the operator's SUCCESS button) or
        `classifier` (a learned reward classifier wraps the env).
      classifier_dir: the saved reward classifier (reward_source = classifier).
      classifier_threshold: p(success) at or above which a step is a success.
      request_timeout_s: time budget of a server request outside the control loop, s.
      watchdog_margin_s: how late the control loop may be before the arm is stopped, s.
      clear_errors_each_step: post `clearerr` before every step's command (HIL-SERL does).
      teleop: settings of the lab's teleop devices for this robot: device name (`spacemouse`,
        `gamepad`, ...) -> fields of its config dataclass (`SpaceMouseConfig`, ...), applied by
        `teleop.make_device_for` whenever a tool builds that device for this env. TOML keys are
        strings, so tables keyed by numbers (`button_events = {12 = "success"}`) get int keys.
    """

    name: str = "franka_task"
    instruction: str = ""
    server_url: str = "http://127.0.0.1:5000/"
    cameras: tuple[CameraConfig, ...] = ()
    control_hz: float = 10.0
    max_episode_steps: int = 100
    pos_scale: float = 0.02
    rot_scale: float = 0.1
    gripper_threshold: float = 0.5
    action_frame: str = "reset"
    gripper_enabled: bool = True
    gripper_sleep_s: float = 0.6
    xyz_low: tuple[float, float, float] = (0.4, -0.1, 0.05)
    xyz_high: tuple[float, float, float] = (0.6, 0.1, 0.3)
    euler_low: tuple[float, float, float] = (math.pi - 0.2, -0.2, -0.5)
    euler_high: tuple[float, float, float] = (math.pi + 0.2, 0.2, 0.5)
    reset_pose: tuple[float, float, float, float, float, float] = (0.5, 0.0, 0.2, math.pi, 0.0, 0.0)
    reset_xy_range: float = 0.0
    reset_z_range: float = 0.0
    reset_yaw_range: float = 0.0
    reset_gripper: str = "open"
    reset_move_s: float = 1.0
    reset_pause_s: float = 0.3
    joint_reset_every: int = 0
    joint_reset_timeout_s: float = 60.0
    precision_params: dict[str, float] = dataclasses.field(default_factory=dict)
    compliance_params: dict[str, float] = dataclasses.field(default_factory=dict)
    reward_source: str = "operator"
    classifier_dir: str = ""
    classifier_threshold: float = 0.5
    request_timeout_s: float = 1.0
    watchdog_margin_s: float = 0.25
    clear_errors_each_step: bool = True
    teleop: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        for name in ("xyz_low", "xyz_high", "euler_low", "euler_high", "reset_pose"):
            _set(self, name, _floats(name, getattr(self, name), 6 if name == "reset_pose" else 3))
        for name in ("control_hz", "pos_scale", "rot_scale", "request_timeout_s", "watchdog_margin_s",
                     "joint_reset_timeout_s"):
            _set(self, name, _number(name, getattr(self, name), positive=True))
        for name in ("gripper_sleep_s", "reset_xy_range", "reset_z_range", "reset_yaw_range",
                     "reset_move_s", "reset_pause_s"):
            _set(self, name, _number(name, getattr(self, name), positive=False))
        for name in ("max_episode_steps", "joint_reset_every"):
            _set(self, name, _integer(name, getattr(self, name), minimum=1 if name == "max_episode_steps" else 0))
        for name in ("gripper_enabled", "clear_errors_each_step"):
            if not isinstance(getattr(self, name), bool):
                raise TaskConfigError(f"field {name!r} must be true or false, got {getattr(self, name)!r}")
        for name in ("name", "instruction", "classifier_dir"):
            if not isinstance(getattr(self, name), str):
                raise TaskConfigError(f"field {name!r} must be a string, got {getattr(self, name)!r}")
        _choice("action_frame", self.action_frame, ACTION_FRAMES)
        _choice("reset_gripper", self.reset_gripper, RESET_GRIPPER)
        _choice("reward_source", self.reward_source, REWARD_SOURCES)
        if not self.name:
            raise TaskConfigError("field 'name' must not be empty")
        if not str(self.server_url).startswith(("http://", "https://")):
            raise TaskConfigError(f"field 'server_url' must be an http:// URL, got {self.server_url!r}")
        if not str(self.server_url).endswith("/"):
            _set(self, "server_url", f"{self.server_url}/")
        for name, bound in (("pos_scale", MAX_POS_SCALE), ("rot_scale", MAX_ROT_SCALE)):
            if getattr(self, name) > bound:
                raise TaskConfigError(f"field {name!r} = {getattr(self, name)} exceeds {bound} per step (a unit "
                                      f"action would jump that far every control period)")
        if not 0.0 < _number("gripper_threshold", self.gripper_threshold, positive=True) < 1.0:
            raise TaskConfigError(f"field 'gripper_threshold' must be in (0, 1), got {self.gripper_threshold}")
        if not 0.0 < _number("classifier_threshold", self.classifier_threshold, positive=True) <= 1.0:
            raise TaskConfigError(f"field 'classifier_threshold' must be in (0, 1], got {self.classifier_threshold}")
        if self.reward_source == "classifier" and not self.classifier_dir:
            raise TaskConfigError("field 'classifier_dir' is required when reward_source = \"classifier\"")
        for name in ("precision_params", "compliance_params"):
            _set(self, name, _params(name, getattr(self, name)))
        _set(self, "teleop", _teleop(self.teleop))
        self._check_cameras()
        self._check_workspace()

    def _check_cameras(self) -> None:
        cameras = tuple(self.cameras)
        if not cameras or not all(isinstance(c, CameraConfig) for c in cameras):
            raise TaskConfigError(f"field 'cameras' must be one or more CameraConfig, got {self.cameras!r}")
        names = [c.name for c in cameras]
        if len(set(names)) != len(names):
            raise TaskConfigError(f"field 'cameras': camera names must be unique, got {names}")
        devices = {}
        for index, camera in enumerate(cameras):
            if camera.kind == "synthetic":
                continue
            if not camera.device:
                raise TaskConfigError(f"field 'cameras[{index}].device' is required for a {camera.kind} camera "
                                      f"({camera.name!r}): its serial number or device path")
            if (camera.kind, camera.device) in devices:
                raise TaskConfigError(f"field 'cameras[{index}].device': {camera.device!r} is already camera "
                                      f"{devices[(camera.kind, camera.device)]!r}")
            devices[(camera.kind, camera.device)] = camera.name
        _set(self, "cameras", cameras)

    def _check_workspace(self) -> None:
        try:
            box = self.workspace
        except ValueError as err:
            raise TaskConfigError(f"fields 'xyz_low/xyz_high/euler_low/euler_high': {err}") from None
        if not box.contains(self.reset_pose[:3], self.reset_pose[3:]):
            raise TaskConfigError(f"field 'reset_pose' {list(self.reset_pose)} lies outside the workspace box "
                                  f"xyz {list(self.xyz_low)}..{list(self.xyz_high)}, "
                                  f"euler {list(self.euler_low)}..{list(self.euler_high)}")

    @property
    def workspace(self):
        """The `WorkspaceBox` of this task."""
        from vlarft.robot_io.franka.safety import WorkspaceBox  # scipy: imported only when needed

        return WorkspaceBox(self.xyz_low, self.xyz_high, self.euler_low, self.euler_high)


def _set(config: TaskConfig, name: str, value: Any) -> None:
    object.__setattr__(config, name, value)


def _number(name: str, value: Any, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TaskConfigError(f"field {name!r} must be a finite number, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise TaskConfigError(f"field {name!r} must be {'> 0' if positive else '>= 0'}, got {value!r}")
    return float(value)


def _integer(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise TaskConfigError(f"field {name!r} must be an integer >= {minimum}, got {value!r}")
    return value


def _floats(name: str, value: Any, count: int) -> tuple[float, ...]:
    ok = isinstance(value, (list, tuple)) and len(value) == count
    ok = ok and all(not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) for v in value)
    if not ok:
        raise TaskConfigError(f"field {name!r} must be {count} finite numbers, got {value!r}")
    return tuple(float(v) for v in value)


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise TaskConfigError(f"field {name!r} must be one of {list(choices)}, got {value!r}")


def _params(name: str, value: Any) -> dict[str, float]:
    from vlarft.robot_io.franka.client import CONTROLLER_PARAMS  # numpy/scipy: imported only when needed

    if not isinstance(value, dict):
        raise TaskConfigError(f"field {name!r} must be a table of controller parameters, got {value!r}")
    for key, item in value.items():
        if key not in CONTROLLER_PARAMS:
            close = difflib.get_close_matches(key, CONTROLLER_PARAMS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise TaskConfigError(f"field '{name}.{key}' is not a parameter of the Franka impedance controller; "
                                  f"{hint}known: {sorted(CONTROLLER_PARAMS)}")
        if isinstance(item, bool) or not isinstance(item, (int, float)) or not math.isfinite(item):
            raise TaskConfigError(f"field '{name}.{key}' must be a finite number, got {item!r}")
        low, high = CONTROLLER_PARAMS[key]
        if not low <= item <= high:
            raise TaskConfigError(f"field '{name}.{key}' = {item} is outside the controller's range [{low}, {high}]")
    return dict(value)


def _teleop(value: Any) -> dict[str, dict[str, Any]]:
    from vlarft.robot_io.teleop import DEVICES

    if not isinstance(value, dict):
        raise TaskConfigError(f"field 'teleop' must be a table of [teleop.<device>] tables, got {value!r}")
    out = {}
    for device, fields in value.items():
        if device not in DEVICES:
            raise TaskConfigError(f"field 'teleop.{device}': unknown teleop device; known: {list(DEVICES)}")
        if not isinstance(fields, dict):
            raise TaskConfigError(f"field 'teleop.{device}' must be a table of device settings, got {fields!r}")
        out[device] = {key: _int_keys(item) for key, item in fields.items()}
    return out


def _int_keys(value: Any) -> Any:
    """A table whose keys all spell integers (TOML `{12 = "success"}`) with int keys; others as they are."""
    if isinstance(value, dict) and value and all(isinstance(k, str) and k.lstrip("-").isdigit() for k in value):
        return {int(k): v for k, v in value.items()}
    return value


# --- files ------------------------------------------------------------------------------------


def bundled_tasks() -> tuple[str, ...]:
    """Names of the task files shipped in `robot_io/tasks/`."""
    return tuple(sorted(p.stem for p in TASKS_DIR.glob("*.toml")))


def task_path(path_or_name: str | Path) -> Path:
    """The file of a bundled task name, or `path_or_name` itself when it is a path."""
    text = str(path_or_name)
    if text in bundled_tasks():
        return TASKS_DIR / f"{text}.toml"
    path = Path(text).expanduser()
    if not path.is_file():
        raise TaskConfigError(f"no task file {text!r} (and no bundled task of that name; bundled: "
                              f"{list(bundled_tasks())})")
    return path


def _cameras(where: str, value: Any) -> tuple[CameraConfig, ...]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise TaskConfigError(f"{where}: field 'cameras' must be an array of [[cameras]] tables, got {value!r}")
    known = {f.name for f in dataclasses.fields(CameraConfig)}
    cameras = []
    for index, entry in enumerate(value):
        unknown = sorted(set(entry) - known)
        if unknown:
            raise TaskConfigError(f"{where}: field 'cameras[{index}].{unknown[0]}' is unknown; camera fields: "
                                  f"{sorted(known)}")
        missing = [k for k in ("name", "kind") if k not in entry]
        if missing:
            raise TaskConfigError(f"{where}: field 'cameras[{index}].{missing[0]}' is required")
        try:
            cameras.append(CameraConfig(**entry))
        except (TypeError, ValueError) as err:
            raise TaskConfigError(f"{where}: field 'cameras[{index}]': {err}") from None
    return tuple(cameras)


def load_task_config(path_or_name: str | Path, **overrides) -> TaskConfig:
    """Reads a task TOML (a bundled name or a path); keyword overrides replace fields after reading."""
    path = task_path(path_or_name)
    where = f"task config {path}"
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except tomllib.TOMLDecodeError as err:
        raise TaskConfigError(f"{where}: not valid TOML: {err}") from None
    fields = {f.name for f in dataclasses.fields(TaskConfig)}
    for source, keys in (("key", raw), ("override", overrides)):
        unknown = sorted(set(keys) - fields)
        if unknown:
            raise TaskConfigError(f"{where}: unknown {source} {unknown[0]!r}; known fields: {sorted(fields)}")
    missing = [key for key in REQUIRED_KEYS if key not in raw]
    if missing:
        raise TaskConfigError(f"{where}: field {missing[0]!r} is required")
    values = {"name": path.stem, **raw}
    values["cameras"] = _cameras(where, raw["cameras"])
    values.update(overrides)
    try:
        return TaskConfig(**values)
    except TaskConfigError as err:
        raise TaskConfigError(f"{where}: {err}") from None

"""`FrankaClient`: our client of the HIL-SERL / ConRFT Franka HTTP server.

The server (`serl_robot_infra/robot_servers/franka_server.py` in those projects) answers POST
requests on `<url><route>`; the URL ends with '/'. Reads answer JSON, commands a short text
("Moved", "Clear", ...). One kept-alive connection (`deadline_http.DeadlineHTTP`) carries the
calls; each call's time budget is a total deadline (connect, send and the whole answer), so a
server that trickles its answer cannot hold a call past it.

Failures raise `RobotConnectionError` naming the URL, the route and what happened (timeout,
connection refused, HTTP status, a bad or incomplete JSON answer). Reads (`get*`) are idempotent
and retried up to `retries` more times within their time budget; commands are sent once, since a
late duplicate of a motion command is worse than a clear error. Arguments that are not finite
numbers raise ValueError before anything is sent.

Conventions of the server: pose = [x, y, z, qx, qy, qz, qw] (metres, scalar-last quaternion,
base frame); Euler angles are extrinsic xyz (roll, pitch, yaw); `gripper_pos` is the gripper
opening normalised 0 (closed) .. 1 (open); `move_gripper` takes a Robotiq-style 0..255 position.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import time
from typing import Any, Self

import numpy as np
from scipy.spatial.transform import Rotation

from vlarft.robot_io.franka.deadline_http import AnswerTooLarge, DeadlineHTTP

_RETRY_PAUSE_S = 0.05  # pause before retrying a read that failed fast (e.g. connection refused)

# Every route of the protocol: name -> answer field of a read (None = a command answering text).
READ_ROUTES = {
    "getstate": None,
    "getpos": "pose",
    "getpos_euler": "pose",
    "getvel": "vel",
    "getforce": "force",
    "gettorque": "torque",
    "getq": "q",
    "getdq": "dq",
    "getjacobian": "jacobian",
    "get_gripper": "gripper",
}
COMMAND_ROUTES = (
    "pose",
    "clearerr",
    "jointreset",
    "startimp",
    "stopimp",
    "update_param",
    "set_load",
    "open_gripper",
    "close_gripper",
    "close_gripper_slow",
    "move_gripper",
    "activate_gripper",
    "reset_gripper",
)

# The impedance controller's parameters `update_param` reconfigures, with the range its dynamic
# reconfigure definition accepts (serl_franka_controllers' compliance_param.cfg; the controller
# clamps a value outside it): name -> (min, max).
CONTROLLER_PARAMS = {
    "translational_stiffness": (0.0, 6000.0),
    "translational_damping": (0.0, 400.0),
    "rotational_stiffness": (0.0, 300.0),
    "rotational_damping": (0.0, 30.0),
    "nullspace_stiffness": (0.0, 100.0),
    "joint1_nullspace_stiffness": (0.0, 100.0),
    "translational_Ki": (0.0, 100.0),
    "rotational_Ki": (0.0, 100.0),
    **{f"translational_clip_{axis}": (0.0, 0.1) for axis in ("x", "y", "z", "neg_x", "neg_y", "neg_z")},
    **{f"rotational_clip_{axis}": (0.0, 0.1) for axis in ("x", "y", "z", "neg_x", "neg_y", "neg_z")},
}

# Shapes of the `getstate` fields (the jacobian arrives as 6 nested lists of 7).
STATE_FIELDS = {
    "pose": (7,),
    "vel": (6,),
    "force": (3,),
    "torque": (3,),
    "q": (7,),
    "dq": (7,),
    "jacobian": (6, 7),
    "gripper_pos": (),
}


class RobotConnectionError(ConnectionError):
    """The Franka server could not be reached or answered something unusable.

    Attributes:
      url: the server's base URL.
      route: the route that failed (e.g. `getstate`).
      reason: what happened, in words.
      status: the HTTP status when the server answered with an error, else None.
    """

    def __init__(self, url: str, route: str, reason: str, status: int | None = None):
        super().__init__(f"Franka server {url} route {route!r}: {reason}")
        self.url, self.route, self.reason, self.status = url, route, reason, status


@dataclasses.dataclass(frozen=True)
class RobotState:
    """One `getstate` answer.

    Attributes:
      pose: TCP pose [x, y, z, qx, qy, qz, qw] in the base frame (m, unit quaternion).
      vel: TCP twist [vx, vy, vz, wx, wy, wz] in the base frame (m/s, rad/s).
      force: external force at the TCP (N), as the server reports it.
      torque: external torque at the TCP (Nm).
      q: joint positions (rad).
      dq: joint velocities (rad/s).
      jacobian: zero (base-frame) Jacobian, 6x7.
      gripper_pos: gripper opening, 0 closed .. 1 open.
    """

    pose: np.ndarray
    vel: np.ndarray
    force: np.ndarray
    torque: np.ndarray
    q: np.ndarray
    dq: np.ndarray
    jacobian: np.ndarray
    gripper_pos: float

    @property
    def position(self) -> np.ndarray:
        """TCP position [x, y, z], m."""
        return self.pose[:3]

    @property
    def quat(self) -> np.ndarray:
        """TCP orientation as a scalar-last quaternion [qx, qy, qz, qw]."""
        return self.pose[3:]

    @property
    def euler(self) -> np.ndarray:
        """TCP orientation as extrinsic xyz Euler angles (roll, pitch, yaw), rad."""
        return Rotation.from_quat(self.quat).as_euler("xyz")

    @classmethod
    def from_json(cls, payload: Any, where: tuple[str, str]) -> RobotState:
        """Parses a `getstate` answer; `where` = (url, route) for the error message."""
        values = {name: _field(payload, name, shape, where) for name, shape in STATE_FIELDS.items()}
        values["gripper_pos"] = float(values["gripper_pos"])
        return cls(**values)


def _finite_number(value: Any, what: str) -> float:
    """`value` as a finite float; ValueError naming `what` otherwise (nothing is sent)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{what} must be a number, got {value!r}")
    if not np.isfinite(value):
        raise ValueError(f"{what} must be finite, got {value!r}")
    return float(value)


def _field(payload: Any, name: str, shape: tuple[int, ...], where: tuple[str, str]) -> np.ndarray:
    """`payload[name]` as a finite float array of `shape`; RobotConnectionError otherwise."""
    if not isinstance(payload, dict) or name not in payload:
        raise RobotConnectionError(*where, f"answer lacks field {name!r}: {str(payload)[:200]}")
    try:
        array = np.asarray(payload[name], dtype=np.float64)
    except (TypeError, ValueError):
        raise RobotConnectionError(*where, f"field {name!r} is not numeric: {payload[name]!r}") from None
    if array.shape != shape:
        raise RobotConnectionError(*where, f"field {name!r} has shape {array.shape}, expected {shape}")
    if not np.all(np.isfinite(array)):
        raise RobotConnectionError(*where, f"field {name!r} is not finite: {array.tolist()}")
    return array


class FrankaClient:
    """Talks to one Franka server; every route of the protocol is a method.

    Args:
      url: base URL, e.g. `http://172.16.0.1:5000/` (a missing trailing '/' is added).
      timeout_s: default time budget of one call, s (per attempt for reads).
      retries: further attempts of a failed read within its budget (commands are never retried).

    Every method takes an optional `timeout` (s): the whole time budget of that call, retries
    included (a total deadline, not a per-read timeout); the control loop passes what is left of
    its period. Not thread-safe: one client per thread.
    """

    def __init__(self, url: str, timeout_s: float = 1.0, retries: int = 2):
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"Franka server URL must start with http:// or https://, got {url!r}")
        if timeout_s <= 0 or retries < 0:
            raise ValueError(f"timeout_s must be > 0 and retries >= 0, got {timeout_s}, {retries}")
        self.url = url if url.endswith("/") else url + "/"
        self.timeout_s = float(timeout_s)
        self.retries = int(retries)
        self._http = DeadlineHTTP(self.url)  # direct to the robot: no environment proxy

    # --- plumbing -------------------------------------------------------------------------

    def _post(self, route: str, body: Any = None, timeout: float | None = None, read: bool = False):
        """POSTs `body` (JSON) to `route`; returns the decoded JSON of a read, else the text."""
        attempts = 1 + self.retries if read else 1
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout_s * attempts)
        for attempt in range(attempts):
            left = deadline - time.monotonic()
            try:
                return self._post_once(route, body, max(min(left, self.timeout_s) if read else left, 1e-3), read)
            except RobotConnectionError as err:
                client_error = err.status is not None and 400 <= err.status < 500  # retrying won't help
                if client_error or attempt + 1 == attempts or deadline - time.monotonic() < 2 * _RETRY_PAUSE_S:
                    if attempt:
                        raise RobotConnectionError(self.url, route, f"{err.reason} (after {attempt + 1} attempts)",
                                                   err.status) from None
                    raise
            time.sleep(_RETRY_PAUSE_S)
        raise AssertionError("unreachable")

    def _post_once(self, route: str, body: Any, timeout: float, read: bool):
        data = None if body is None else json.dumps(body).encode()
        try:
            status, answer = self._http.post(route, data, time.monotonic() + timeout)
        except TimeoutError:
            raise RobotConnectionError(self.url, route, f"no answer within {timeout:.3g} s (timed out)") from None
        except ConnectionRefusedError:
            raise RobotConnectionError(self.url, route, "connection refused; is the server running?") from None
        except AnswerTooLarge as err:
            raise RobotConnectionError(self.url, route, str(err)) from None
        except (OSError, http.client.HTTPException) as err:
            raise RobotConnectionError(self.url, route, f"connection failed ({type(err).__name__}: "
                                       f"{str(err)[:200]}); is the host reachable?") from None
        text = answer.decode("utf-8", errors="replace")
        if status != 200:
            raise RobotConnectionError(self.url, route, f"answered HTTP {status}: {text[:200]!r}", status)
        if not read:
            return text
        try:
            return json.loads(text)
        except ValueError:
            raise RobotConnectionError(self.url, route, f"answered non-JSON: {text[:200]!r}") from None

    def _read(self, route: str, shape: tuple[int, ...], timeout: float | None) -> np.ndarray:
        field = READ_ROUTES[route]
        return _field(self._post(route, timeout=timeout, read=True), field, shape, (self.url, route))

    # --- reads ----------------------------------------------------------------------------

    def get_state(self, timeout: float | None = None) -> RobotState:
        """Everything at once (`getstate`)."""
        return RobotState.from_json(self._post("getstate", timeout=timeout, read=True), (self.url, "getstate"))

    def get_pose(self, timeout: float | None = None) -> np.ndarray:
        """TCP pose [x, y, z, qx, qy, qz, qw] (`getpos`)."""
        return self._read("getpos", (7,), timeout)

    def get_pose_euler(self, timeout: float | None = None) -> np.ndarray:
        """TCP pose [x, y, z, roll, pitch, yaw] (`getpos_euler`)."""
        return self._read("getpos_euler", (6,), timeout)

    def get_vel(self, timeout: float | None = None) -> np.ndarray:
        """TCP twist, 6 values (`getvel`)."""
        return self._read("getvel", (6,), timeout)

    def get_force(self, timeout: float | None = None) -> np.ndarray:
        """External force at the TCP, 3 values (`getforce`)."""
        return self._read("getforce", (3,), timeout)

    def get_torque(self, timeout: float | None = None) -> np.ndarray:
        """External torque at the TCP, 3 values (`gettorque`)."""
        return self._read("gettorque", (3,), timeout)

    def get_q(self, timeout: float | None = None) -> np.ndarray:
        """Joint positions, 7 values (`getq`)."""
        return self._read("getq", (7,), timeout)

    def get_dq(self, timeout: float | None = None) -> np.ndarray:
        """Joint velocities, 7 values (`getdq`)."""
        return self._read("getdq", (7,), timeout)

    def get_jacobian(self, timeout: float | None = None) -> np.ndarray:
        """Zero Jacobian, 6x7 (`getjacobian`)."""
        return self._read("getjacobian", (6, 7), timeout)

    def get_gripper(self, timeout: float | None = None) -> float:
        """Gripper opening 0 closed .. 1 open (`get_gripper`)."""
        return float(self._read("get_gripper", (), timeout))

    # --- commands -------------------------------------------------------------------------

    def send_pose(self, pose: np.ndarray, timeout: float | None = None) -> str:
        """Publishes the impedance controller's target [x, y, z, qx, qy, qz, qw] (`pose`)."""
        pose = np.asarray(pose, dtype=np.float64)
        if pose.shape != (7,) or not np.all(np.isfinite(pose)):
            raise ValueError(f"pose must be 7 finite numbers [x,y,z,qx,qy,qz,qw], got {pose.tolist()}")
        return self._post("pose", {"arr": pose.tolist()}, timeout)

    def clear_error(self, timeout: float | None = None) -> str:
        """Clears controller errors (`clearerr`)."""
        return self._post("clearerr", timeout=timeout)

    def joint_reset(self, timeout: float = 60.0) -> str:
        """Moves to the server's reset joint configuration; blocks for seconds (`jointreset`)."""
        return self._post("jointreset", timeout=timeout)

    def start_impedance(self, timeout: float | None = None) -> str:
        """Starts the Cartesian impedance controller (`startimp`)."""
        return self._post("startimp", timeout=timeout)

    def stop_impedance(self, timeout: float | None = None) -> str:
        """Stops the Cartesian impedance controller (`stopimp`)."""
        return self._post("stopimp", timeout=timeout)

    def update_params(self, params: dict[str, float], timeout: float | None = None) -> str:
        """Reconfigures the controller (stiffness, damping, clip limits...) (`update_param`);
        ValueError naming the parameter for a value that is not a finite number."""
        body = {str(name): _finite_number(value, f"controller parameter {name!r}") for name, value in params.items()}
        return self._post("update_param", body, timeout)

    def set_load(self, mass: float, center_of_mass: tuple[float, float, float],
                 inertia: tuple[float, ...], timeout: float | None = None) -> str:
        """Sets the payload: mass (kg), centre of mass (m, flange frame), 3x3 inertia row-major."""
        if len(center_of_mass) != 3 or len(inertia) != 9:
            raise ValueError(f"set_load needs a 3-vector centre of mass and 9 inertia values, got "
                             f"{len(center_of_mass)} and {len(inertia)}")
        body = {"mass": _finite_number(mass, "load mass"),
                "F_x_center_load": [_finite_number(v, "load centre of mass") for v in center_of_mass],
                "load_inertia": [_finite_number(v, "load inertia") for v in inertia]}
        return self._post("set_load", body, timeout)

    def open_gripper(self, timeout: float | None = None) -> str:
        """Opens the gripper (`open_gripper`)."""
        return self._post("open_gripper", timeout=timeout)

    def close_gripper(self, slow: bool = False, timeout: float | None = None) -> str:
        """Closes the gripper (`close_gripper`, or `close_gripper_slow`)."""
        return self._post("close_gripper_slow" if slow else "close_gripper", timeout=timeout)

    def move_gripper(self, position: int, timeout: float | None = None) -> str:
        """Moves the gripper to `position` in 0..255 (`move_gripper`).

        The server's gripper interprets it: a Robotiq reads 0 = open .. 255 = closed, the Franka
        hand server a width of position / 2550 m (255 = open).
        """
        if not 0 <= int(position) <= 255:
            raise ValueError(f"gripper position must be in 0..255, got {position}")
        return self._post("move_gripper", {"gripper_pos": int(position)}, timeout)

    def activate_gripper(self, timeout: float | None = None) -> str:
        """Activates a Robotiq gripper (`activate_gripper`)."""
        return self._post("activate_gripper", timeout=timeout)

    def reset_gripper(self, timeout: float | None = None) -> str:
        """Resets and re-activates a Robotiq gripper (`reset_gripper`)."""
        return self._post("reset_gripper", timeout=timeout)

    def close(self) -> None:
        """Closes the kept-alive connection."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

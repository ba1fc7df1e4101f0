"""A loopback stand-in for the Franka HTTP server, for tests and dry runs without a robot.

    with FakeFrankaServer() as server:          # 127.0.0.1, a free port
        client = FrankaClient(server.url)
    python -m vlarft.robot_io.franka.fake_server --port 5000

It speaks every route of the HIL-SERL / ConRFT server (all POST, same JSON fields, same answer
texts: "Moved", "Opened", "Clear", ...) in front of a simple kinematic arm, integrated by wall
time whenever a request arrives:
  * the TCP moves toward the last `pose` target at most `max_speed` m/s and `max_angular_speed`
    rad/s (ignored while the impedance controller is stopped or an error is pending: `clearerr`
    clears it); `vel` is the difference of successive poses over their time;
  * the gripper opening (0 closed .. 1 open) moves toward its command at `gripper_speed` 1/s;
  * force is zero except for an optional floor at `floor_z`: a target below it holds the TCP on
    the floor and pushes with `contact_stiffness` x depth along +z; torque is zero;
  * q / dq / jacobian are placeholders: a fixed full-rank 6x7 `jacobian`, q = `home_q` +
    pinv(J) (pose - home pose) and dq = pinv(J) twist, so J dq = vel holds;
  * `jointreset` puts the arm back at `home_pose` / `home_q` after `joint_reset_s`.

Hooks for tests: `freeze()` (requests are recorded, then block until `unfreeze()`: a hung
server), `trickle(route, seconds_per_byte)` (that route's answers are sent one byte at a time: a
server too slow for its client, which per-read timeouts never notice), `fail(route, status, body)` (a route answers that instead, e.g. a 500 or non-JSON),
`inject_error()` (the arm ignores targets until `clearerr`), `recorded(route)` (every request
received: route, JSON body, monotonic arrival time; the newest `max_records`) and `snapshot()`
(what the arm holds).

Users run it too, so it checks what it is sent like a careful server: a body over
`MAX_BODY_BYTES` is answered 413 unread, malformed or too deeply nested JSON 400, and values of
the wrong type 400 (pose: 7 finite numbers; update_param: known controller parameters
(`client.CONTROLLER_PARAMS`) with finite numbers; set_load: finite mass, 3 + 9 numbers;
move_gripper: an integer 0..255).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import math
import http.server
import json
import logging
import socket
import threading
import time
from typing import Any, Self

import numpy as np
from scipy.spatial.transform import Rotation

from vlarft.robot_io.franka.client import CONTROLLER_PARAMS

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 16  # the largest real request (set_load) is ~200 bytes
MAX_RECORDS = 10_000  # recorded requests kept (the newest)

# A fixed, well-conditioned stand-in for the zero Jacobian (a Panda's near its home pose).
_JACOBIAN = np.array([
    [0.0, 0.3, 0.0, -0.3, 0.0, 0.2, 0.0],
    [0.5, 0.0, 0.5, 0.0, 0.1, 0.0, 0.0],
    [0.0, -0.5, 0.0, 0.4, 0.0, 0.1, 0.0],
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
    [0.0, 1.0, 0.0, -1.0, 0.0, 1.0, 0.0],
    [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0],
])
_JACOBIAN_PINV = np.linalg.pinv(_JACOBIAN)


@dataclasses.dataclass(frozen=True)
class FakeArmConfig:
    """The fake arm.

    Attributes:
      home_pose: TCP pose after start and `jointreset`, [x,y,z,qx,qy,qz,qw] (pointing down).
      home_q: joint positions at `home_pose` (HIL-SERL's reset joint target).
      max_speed: TCP speed limit toward the target, m/s.
      max_angular_speed: TCP angular speed limit toward the target, rad/s.
      gripper_speed: gripper opening speed, full strokes per second.
      floor_z: height of a floor the TCP cannot go below, m (None = no floor).
      contact_stiffness: force per metre of target depth below the floor, N/m.
      joint_reset_s: how long `jointreset` blocks, s.
    """

    home_pose: tuple[float, ...] = (0.5, 0.0, 0.3, 1.0, 0.0, 0.0, 0.0)
    home_q: tuple[float, ...] = (0.0, 0.0, 0.0, -1.9, 0.0, 2.0, 0.0)
    max_speed: float = 1.0
    max_angular_speed: float = 4.0
    gripper_speed: float = 5.0
    floor_z: float | None = None
    contact_stiffness: float = 2000.0
    joint_reset_s: float = 0.0


@dataclasses.dataclass(frozen=True)
class RecordedRequest:
    """One request the fake server received: route, JSON body (None if empty), arrival time."""

    route: str
    body: Any
    time: float


class _Arm:
    """The kinematic arm; every method takes the lock and first integrates up to now."""

    def __init__(self, config: FakeArmConfig):
        self.config = config
        self.lock = threading.Lock()
        self._home()
        self.gripper = self.gripper_target = 1.0
        self.impedance = True
        self.error = False
        self.params: dict[str, Any] = {}
        self.load: dict[str, Any] = {}

    def _home(self) -> None:
        home = np.asarray(self.config.home_pose, np.float64)
        self.pos, self.rot = home[:3].copy(), Rotation.from_quat(home[3:])
        self.target_pos, self.target_rot = self.pos.copy(), self.rot
        self.vel = np.zeros(6)
        self.force = np.zeros(3)
        self.stamp = time.monotonic()

    def advance(self) -> None:
        now = time.monotonic()
        dt = now - self.stamp
        if dt < 1e-4:
            return
        cfg = self.config
        start_pos, start_rot = self.pos.copy(), self.rot
        goal = self.target_pos.copy()
        self.force = np.zeros(3)
        if cfg.floor_z is not None and goal[2] < cfg.floor_z:
            self.force[2] = cfg.contact_stiffness * (cfg.floor_z - goal[2])
            goal[2] = cfg.floor_z
        step = goal - self.pos
        dist = np.linalg.norm(step)
        if dist > cfg.max_speed * dt:
            step *= cfg.max_speed * dt / dist
        self.pos = self.pos + step
        turn = (self.target_rot * self.rot.inv()).as_rotvec()
        angle = np.linalg.norm(turn)
        if angle > cfg.max_angular_speed * dt:
            turn *= cfg.max_angular_speed * dt / angle
        self.rot = Rotation.from_rotvec(turn) * self.rot
        self.vel = np.concatenate([(self.pos - start_pos) / dt, (self.rot * start_rot.inv()).as_rotvec() / dt])
        stroke = self.gripper_target - self.gripper
        self.gripper += float(np.clip(stroke, -cfg.gripper_speed * dt, cfg.gripper_speed * dt))
        self.stamp = now

    def pose(self) -> np.ndarray:
        return np.concatenate([self.pos, self.rot.as_quat()])

    def q(self) -> np.ndarray:
        home = np.asarray(self.config.home_pose, np.float64)
        offset = np.concatenate([self.pos - home[:3], (self.rot * Rotation.from_quat(home[3:]).inv()).as_rotvec()])
        return np.asarray(self.config.home_q) + _JACOBIAN_PINV @ offset

    def state(self) -> dict[str, Any]:
        """The `getstate` answer."""
        return {
            "pose": self.pose().tolist(),
            "vel": self.vel.tolist(),
            "force": self.force.tolist(),
            "torque": [0.0, 0.0, 0.0],
            "q": self.q().tolist(),
            "dq": (_JACOBIAN_PINV @ self.vel).tolist(),
            "jacobian": _JACOBIAN.tolist(),
            "gripper_pos": self.gripper,
        }

    def set_target(self, pose: np.ndarray) -> None:
        if self.impedance and not self.error:
            self.target_pos, self.target_rot = pose[:3].copy(), Rotation.from_quat(pose[3:])

    def joint_reset(self) -> None:
        self.error = False
        self._home()


class BadRequest(ValueError):
    """A request body the real server would reject (answered with HTTP 400)."""


class FakeFrankaServer:
    """The fake server; `start()`/`stop()` or a `with` block (see the module docstring).

    Args:
      host: interface to bind (loopback by default).
      port: TCP port; 0 picks a free one (see `url`).
      config: the fake arm.
      max_records: how many of the newest requests `recorded()` keeps.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, config: FakeArmConfig | None = None,
                 max_records: int = MAX_RECORDS):
        self.host, self._port = host, port
        self.arm = _Arm(config or FakeArmConfig())
        self._records: collections.deque[RecordedRequest] = collections.deque(maxlen=max_records)
        self._records_lock = threading.Lock()
        self._failures: dict[str, tuple[int, str]] = {}
        self._trickles: dict[str, float] = {}
        self._unfrozen = threading.Event()
        self._unfrozen.set()
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._httpd: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._routes = {
            "getstate": lambda body: self.arm.state(),
            "getpos": lambda body: {"pose": self.arm.pose().tolist()},
            "getpos_euler": lambda body: {"pose": [*self.arm.pos.tolist(), *self.arm.rot.as_euler("xyz").tolist()]},
            "getvel": lambda body: {"vel": self.arm.vel.tolist()},
            "getforce": lambda body: {"force": self.arm.force.tolist()},
            "gettorque": lambda body: {"torque": [0.0, 0.0, 0.0]},
            "getq": lambda body: {"q": self.arm.q().tolist()},
            "getdq": lambda body: {"dq": (_JACOBIAN_PINV @ self.arm.vel).tolist()},
            "getjacobian": lambda body: {"jacobian": _JACOBIAN.tolist()},
            "get_gripper": lambda body: {"gripper": self.arm.gripper},
            "pose": self._pose,
            "clearerr": lambda body: self._set(error=False, answer="Clear"),
            "jointreset": self._joint_reset,
            "startimp": lambda body: self._set(impedance=True, error=False, answer="Started impedance"),
            "stopimp": lambda body: self._set(impedance=False, answer="Stopped impedance"),
            "update_param": self._update_param,
            "set_load": self._set_load,
            "open_gripper": lambda body: self._set(gripper_target=1.0, answer="Opened"),
            "close_gripper": lambda body: self._set(gripper_target=0.0, answer="Closed"),
            "close_gripper_slow": lambda body: self._set(gripper_target=0.0, answer="Closed"),
            "move_gripper": self._move_gripper,
            "activate_gripper": lambda body: "Activated",
            "reset_gripper": lambda body: self._set(gripper_target=1.0, answer="Reset"),
        }

    # --- life cycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL, ending with '/'."""
        if self._httpd is None:
            raise RuntimeError("the fake Franka server is not started")
        return f"http://{self.host}:{self._httpd.server_address[1]}/"

    def start(self) -> FakeFrankaServer:
        """Binds and serves in a background thread."""
        handler = type("Handler", (_Handler,), {"fake": self})
        self._httpd = http.server.ThreadingHTTPServer((self.host, self._port), handler)
        self._httpd.block_on_close = False
        self._stopping.clear()
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="fake-franka",
                                        daemon=True)
        self._thread.start()
        log.info("fake Franka server on %s", self.url)
        return self

    def stop(self) -> None:
        """Stops serving; frozen requests are released and open connections closed."""
        if self._httpd is None:
            return
        self._stopping.set()
        self._unfrozen.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._records_lock:
            for conn in list(self._connections):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self._thread.join()
        self._httpd = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- test hooks -------------------------------------------------------------------------

    def freeze(self) -> None:
        """Stop answering: requests are recorded, then block until `unfreeze()` or `stop()`."""
        self._unfrozen.clear()

    def unfreeze(self) -> None:
        """Answer again (blocked requests are then served)."""
        self._unfrozen.set()

    def trickle(self, route: str, seconds_per_byte: float | None) -> None:
        """Send `route`'s answers one byte every `seconds_per_byte` (None = at full speed again)."""
        if seconds_per_byte is None:
            self._trickles.pop(route, None)
        else:
            self._trickles[route] = float(seconds_per_byte)

    def fail(self, route: str, status: int = 500, body: str = "injected failure") -> None:
        """Make `route` answer `status` with `body` (status 200 + a non-JSON body = a bad answer)."""
        self._failures[route] = (status, body)

    def heal(self, route: str | None = None) -> None:
        """Undo `fail` for `route` (None = every route)."""
        if route is None:
            self._failures.clear()
        else:
            self._failures.pop(route, None)

    def inject_error(self) -> None:
        """A controller error (like a reflex): targets are ignored until `clearerr`."""
        with self.arm.lock:
            self.arm.error = True

    def recorded(self, route: str | None = None) -> list[RecordedRequest]:
        """Requests received so far (to `route` only, if given), oldest first."""
        with self._records_lock:
            return [r for r in self._records if route is None or r.route == route]

    def clear_recorded(self) -> None:
        """Forget the recorded requests."""
        with self._records_lock:
            self._records.clear()

    def snapshot(self) -> dict[str, Any]:
        """What the arm holds now: the `getstate` fields plus target, impedance, error, params, load."""
        with self.arm.lock:
            self.arm.advance()
            return {
                **self.arm.state(),
                "target": [*self.arm.target_pos.tolist(), *self.arm.target_rot.as_quat().tolist()],
                "gripper_target": self.arm.gripper_target,
                "impedance": self.arm.impedance,
                "error": self.arm.error,
                "params": dict(self.arm.params),
                "load": dict(self.arm.load),
            }

    # --- request handling -------------------------------------------------------------------

    def _record(self, route: str, body: Any) -> None:
        with self._records_lock:
            self._records.append(RecordedRequest(route, body, time.monotonic()))

    def _wait_unfrozen(self) -> bool:
        """Blocks while frozen; False if the server is stopping."""
        self._unfrozen.wait()  # stop() sets it too
        return not self._stopping.is_set()

    def _answer(self, route: str, body: Any) -> tuple[int, Any]:
        if route in self._failures:
            return self._failures[route]
        if route not in self._routes:
            return 404, f"no route {route!r}"
        try:
            if route == "jointreset":  # blocks for a while: not under the arm lock
                return 200, self._routes[route](body)
            with self.arm.lock:
                self.arm.advance()
                return 200, self._routes[route](body)
        except BadRequest as err:
            return 400, str(err)

    def _set(self, answer: str, **fields) -> str:
        for name, value in fields.items():
            setattr(self.arm, name, value)
        return answer

    def _pose(self, body: Any) -> str:
        values = body.get("arr") if isinstance(body, dict) else None
        if not isinstance(values, list) or len(values) != 7 or not all(map(_finite_number, values)):
            raise BadRequest(f'pose needs {{"arr": 7 finite numbers [x,y,z,qx,qy,qz,qw]}}, got {_short(body)}')
        pose = np.asarray(values, dtype=np.float64)
        if np.linalg.norm(pose[3:]) < 1e-6:
            raise BadRequest(f"pose arr needs a non-zero quaternion, got {_short(body)}")
        self.arm.set_target(pose)
        return "Moved"

    def _joint_reset(self, body: Any) -> str:
        time.sleep(self.arm.config.joint_reset_s)
        with self.arm.lock:
            self.arm.joint_reset()
        return "Reset Joint"

    def _update_param(self, body: Any) -> str:
        if not isinstance(body, dict):
            raise BadRequest(f"update_param needs a JSON object of parameters, got {_short(body)}")
        for name, value in body.items():
            if name not in CONTROLLER_PARAMS:
                raise BadRequest(f"update_param: unknown controller parameter {_short(name)}")
            if not _finite_number(value):
                raise BadRequest(f"update_param: {name} must be a finite number, got {_short(value)}")
        self.arm.params.update(body)
        return "Updated compliance parameters"

    def _set_load(self, body: Any) -> str:
        shapes = {"mass": None, "F_x_center_load": 3, "load_inertia": 9}
        if not isinstance(body, dict) or set(body) != set(shapes):
            raise BadRequest(f"set_load needs exactly mass, F_x_center_load and load_inertia, got {_short(body)}")
        for name, count in shapes.items():
            value = body[name]
            ok = _finite_number(value) if count is None else (
                isinstance(value, list) and len(value) == count and all(map(_finite_number, value)))
            if not ok:
                raise BadRequest(f"set_load: {name} must be {'a finite number' if count is None else f'{count} finite numbers'}, "
                                 f"got {_short(value)}")
        self.arm.load = dict(body)
        return "Set Load"

    def _move_gripper(self, body: Any) -> str:
        position = body.get("gripper_pos") if isinstance(body, dict) else None
        if isinstance(position, bool) or not isinstance(position, int) or not 0 <= position <= 255:
            raise BadRequest(f'move_gripper needs {{"gripper_pos": an integer 0..255}}, got {_short(body)}')
        self.arm.gripper_target = 1.0 - position / 255.0  # Robotiq: 0 = open, 255 = closed
        return "Moved Gripper"


def _finite_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _short(value: Any) -> str:
    """`repr(value)`, cut to a length an error message can carry."""
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


class _TrickleWriter:
    """Writes to `inner` one byte every `seconds_per_byte` (stops when the server stops)."""

    def __init__(self, inner, seconds_per_byte: float, stopping: threading.Event):
        self.inner, self.seconds_per_byte, self.stopping = inner, seconds_per_byte, stopping

    def write(self, data: bytes) -> int:
        for index in range(len(data)):
            if self.stopping.wait(self.seconds_per_byte):
                raise ConnectionAbortedError("the fake server is stopping")
            self.inner.write(data[index:index + 1])
            self.inner.flush()
        return len(data)

    def flush(self) -> None:
        self.inner.flush()


class _Handler(http.server.BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive handler; `fake` is set on a subclass per server."""

    fake: FakeFrankaServer
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no 40 ms delayed-ACK stalls
        with self.fake._records_lock:
            self.fake._connections.add(self.connection)

    def finish(self) -> None:
        with self.fake._records_lock:
            self.fake._connections.discard(self.connection)
        super().finish()

    def do_POST(self) -> None:
        route = self.path.lstrip("/").split("?", 1)[0]
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY_BYTES:
            self.fake._record(route, f"<refused body, Content-Length {self.headers.get('Content-Length')!r}>")
            self.close_connection = True  # the body is not read: the connection cannot carry on
            return self._respond(413 if length > MAX_BODY_BYTES else 400,
                                 f"request body must be 0..{MAX_BODY_BYTES} bytes with a valid Content-Length")
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw) if raw.strip() else None
        except (ValueError, RecursionError):  # malformed, not UTF-8, or nested too deeply
            self.fake._record(route, raw[:200].decode(errors="replace"))
            return self._respond(400, "request body is not JSON (or is nested too deeply)")
        self.fake._record(route, body)
        if not self.fake._wait_unfrozen():
            self.close_connection = True
            return
        self._respond(*self.fake._answer(route, body), seconds_per_byte=self.fake._trickles.get(route))

    def _method_not_allowed(self) -> None:
        self._respond(405, "Method Not Allowed: every route is POST")

    do_GET = do_PUT = do_DELETE = _method_not_allowed

    def _respond(self, status: int, payload: Any, seconds_per_byte: float | None = None) -> None:
        is_json = isinstance(payload, (dict, list))
        data = (json.dumps(payload) if is_json else str(payload)).encode()
        try:
            if seconds_per_byte is not None:  # headers and body go into the buffer, then trickle
                self.wfile = _TrickleWriter(self.wfile, seconds_per_byte, self.fake._stopping)
            self.send_response(status)
            self.send_header("Content-Type", "application/json" if is_json else "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the client gave up (timed out) and closed the connection
            self.close_connection = True
        finally:
            if isinstance(self.wfile, _TrickleWriter):
                self.wfile = self.wfile.inner

    def log_message(self, format: str, *args) -> None:
        log.debug("%s %s", self.address_string(), format % args)


def main(argv: list[str] | None = None) -> None:
    """Runs the fake server until Ctrl-C."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind")
    parser.add_argument("--port", type=int, default=5000, help="TCP port (0 = a free one)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    with FakeFrankaServer(args.host, args.port) as server:
        print(f"fake Franka server listening on {server.url} (Ctrl-C stops)", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()

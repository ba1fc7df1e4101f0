"""Safety of the real arm: action validation, the workspace box, and the control watchdog.

* `validate_action` refuses a malformed action (shape, NaN/Inf, outside [-1, 1]) with a
  ValueError naming the field, before anything reaches the robot.
* `WorkspaceBox` clips a target pose into a position box and an extrinsic-xyz Euler box. Each
  Euler angle is first wrapped into the box's own 2π window (centre ± π), so a box around
  roll = π (a tool pointing down: [π - 0.2, π + 0.2]) treats roll = -3.1 as 3.18, inside.
* `ControlWatchdog` keeps the control loop honest (see its docstring). When it trips it logs the
  reason, asks the arm to hold (the env commands the last measured pose), and every later step
  raises `RobotSafetyStop` with the reason until the env is reset.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from vlarft.robot_io.contract import ACTION_NAMES

log = logging.getLogger(__name__)

ACTION_TOLERANCE = 1e-6  # float rounding beyond ±1 that is clipped rather than refused


class RobotSafetyStop(RuntimeError):
    """The arm was stopped for safety; `reason` says why. Reset the env to continue."""

    def __init__(self, reason: str):
        super().__init__(f"robot safety stop: {reason}")
        self.reason = reason


def validate_action(action: Any, names: tuple[str, ...] = ACTION_NAMES) -> np.ndarray:
    """`action` as float64[len(names)] inside [-1, 1]; ValueError naming the bad field otherwise."""
    try:
        array = np.asarray(action, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"action must be {len(names)} numbers {names}, got {action!r}") from err
    if array.shape != (len(names),):
        raise ValueError(f"action must have shape ({len(names)},) = {names}, got shape {array.shape}")
    for index, (name, value) in enumerate(zip(names, array)):
        if not math.isfinite(value):
            raise ValueError(f"action field {name!r} (index {index}) is {value}; actions must be finite")
        if abs(value) > 1.0 + ACTION_TOLERANCE:
            raise ValueError(f"action field {name!r} (index {index}) = {value:.6g} is outside [-1, 1]")
    return np.clip(array, -1.0, 1.0)


def wrap_into_window(angles: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Each angle shifted by a multiple of 2π into [centre - π, centre + π), centre = (low + high) / 2."""
    centre = (np.asarray(low, np.float64) + np.asarray(high, np.float64)) / 2.0
    return centre + np.mod(np.asarray(angles, np.float64) - centre + np.pi, 2.0 * np.pi) - np.pi


@dataclasses.dataclass(frozen=True)
class WorkspaceBox:
    """Where the TCP target may go: a position box (m) and an xyz-Euler box (rad, base frame).

    Euler bounds may leave [-π, π] (e.g. roll in [2.94, 3.34] around π); each range spans at
    most 2π.
    """

    xyz_low: tuple[float, float, float]
    xyz_high: tuple[float, float, float]
    euler_low: tuple[float, float, float]
    euler_high: tuple[float, float, float]

    def __post_init__(self):
        for name in ("xyz", "euler"):
            low, high = np.asarray(getattr(self, f"{name}_low")), np.asarray(getattr(self, f"{name}_high"))
            if low.shape != (3,) or high.shape != (3,) or not np.all(np.isfinite([low, high])):
                raise ValueError(f"{name}_low and {name}_high must be 3 finite numbers each, got {low}, {high}")
            if np.any(low > high):
                raise ValueError(f"{name}_low {low.tolist()} must not exceed {name}_high {high.tolist()}")
        if np.any(np.subtract(self.euler_high, self.euler_low) > 2 * np.pi):
            raise ValueError(f"every Euler range must span at most 2π, got {self.euler_low} .. {self.euler_high}")

    def wrap_euler(self, euler: np.ndarray) -> np.ndarray:
        """Euler angles expressed in the box's windows (continuous across ±π), not clipped."""
        return wrap_into_window(euler, self.euler_low, self.euler_high)

    def clip_euler(self, euler: np.ndarray) -> np.ndarray:
        """Euler angles wrapped into the box's windows, then clipped to the box."""
        return np.clip(self.wrap_euler(euler), self.euler_low, self.euler_high)

    def clip(self, position: np.ndarray, quat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(position, scalar-last quaternion) clipped into the box."""
        position = np.clip(np.asarray(position, np.float64), self.xyz_low, self.xyz_high)
        euler = self.clip_euler(Rotation.from_quat(quat).as_euler("xyz"))
        return position, Rotation.from_euler("xyz", euler).as_quat()

    def contains(self, position: np.ndarray, euler: np.ndarray, tol: float = 1e-9) -> bool:
        """Whether a pose (position, Euler) lies inside the box."""
        wrapped = self.wrap_euler(euler)
        return bool(np.all(np.asarray(position) >= np.asarray(self.xyz_low) - tol)
                    and np.all(np.asarray(position) <= np.asarray(self.xyz_high) + tol)
                    and np.all(wrapped >= np.asarray(self.euler_low) - tol)
                    and np.all(wrapped <= np.asarray(self.euler_high) + tol))


class ControlWatchdog:
    """Watches the control period; trips (hold + `RobotSafetyStop`) when it is not kept.

    The env calls `begin_step()` on entering step(), sends its commands with request deadlines
    from `time_left(activity)`, waits until the observation is due, reads it and calls
    `end_step()`. The next observation is due `period_s` after the previous one; the loop may be
    late by `margin_s`. It trips when:
      * step() is entered, or finishes, more than `margin_s` after its observation was due
        (the period overran),
      * the env reports that the server stopped answering or a camera died (`trip(reason)`),
      * a background thread sees the observation more than `margin_s` overdue, whatever the
        client is doing: stuck inside step() (a request, a camera: the reason names the last
        `activity`) or not calling step() at all (the client side stalled). It holds the arm at
        once from its own thread instead of waiting for the step to come back.
    Once tripped, `time_left()` raises too, so a step that is still running sends nothing more.
    The deadline is armed from the first step() of an episode (the time between reset() and the
    first step is free: policy warm-up, the operator getting ready) and disarmed by
    `end_episode()`. Tripping calls `hold()` once (errors are logged, not raised), logs the
    reason, and makes `begin_step()` raise `RobotSafetyStop` until `reset()`.

    Args:
      period_s: control period, s.
      margin_s: allowed lateness, s.
      hold: stops the arm (best effort); it returns a short description of what it did.
      name: names the robot in reasons and logs (e.g. the server URL).
    """

    def __init__(self, period_s: float, margin_s: float, hold: Callable[[], str], name: str):
        if period_s <= 0 or margin_s <= 0:
            raise ValueError(f"period_s and margin_s must be positive, got {period_s}, {margin_s}")
        self.period_s, self.margin_s, self.name = float(period_s), float(margin_s), name
        self._hold = hold
        self._lock = threading.RLock()
        self._due: float | None = None  # when the next observation is due; None = no deadline
        self._in_step = False
        self._activity = "starting the step"
        self._reason: str | None = None
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"watchdog {name}", daemon=True)
        self._thread.start()

    @property
    def reason(self) -> str | None:
        """Why it tripped (None = not tripped)."""
        return self._reason

    def reset(self) -> None:
        """Forget a trip and the deadline (the env is resetting)."""
        with self._lock:
            self._reason, self._due, self._in_step = None, None, False

    def end_episode(self) -> None:
        """No deadline until the next step() (the episode ended)."""
        with self._lock:
            self._due, self._in_step = None, False

    def begin_step(self) -> float:
        """Enter a step: raises RobotSafetyStop if tripped or late; returns when the observation is due."""
        with self._lock:
            now = time.monotonic()
            if self._reason is None and self._due is not None and now > self._due + self.margin_s:
                self._trip(f"control period overran: step() came {self._since_obs(now):.3f} s after the "
                           f"previous observation ({self._limits()})")
            if self._reason is not None:
                raise RobotSafetyStop(self._reason)
            if self._due is None:
                self._due = now + self.period_s
            self._in_step, self._activity = True, "starting the step"
            return self._due

    def time_left(self, activity: str = "") -> float:
        """Seconds until this step is over its margin (a request deadline), noting what the step
        does next (`activity`, for the reason of a trip); raises RobotSafetyStop if tripped or if
        no time is left."""
        with self._lock:
            if self._reason is not None:
                raise RobotSafetyStop(self._reason)
            self._activity = activity or self._activity
            left = self._due + self.margin_s - time.monotonic() if self._due is not None else self.margin_s
        if left <= 0:
            raise self.trip(f"control step overran: the observation is {self.margin_s - left:.3f} s late "
                            f"({self._limits()})")
        return left

    def end_step(self) -> None:
        """Leave a step (its observation was read): raises RobotSafetyStop if it ended too late."""
        with self._lock:
            now = time.monotonic()
            self._in_step = False
            if self._reason is None and self._due is not None and now > self._due + self.margin_s:
                self._trip(f"control step overran: the observation came {now - self._due:.3f} s after it "
                           f"was due ({self._limits()})")
            if self._reason is not None:
                raise RobotSafetyStop(self._reason)
            next_due = self._due + self.period_s
            self._due = next_due if next_due > now else now + self.period_s

    def trip(self, reason: str) -> RobotSafetyStop:
        """Trip now (unless already tripped); returns the error for the caller to raise."""
        with self._lock:
            self._trip(reason)
            return RobotSafetyStop(self._reason)

    def close(self) -> None:
        """Stop the background thread."""
        self._closed.set()
        self._thread.join()

    # --- internals --------------------------------------------------------------------------

    def _limits(self) -> str:
        return f"control period {self.period_s:.3g} s, margin {self.margin_s:.3g} s"

    def _since_obs(self, now: float) -> float:
        return now - (self._due - self.period_s)

    def _trip(self, reason: str) -> None:
        if self._reason is not None:
            return
        self._due, self._in_step = None, False
        self._reason = f"{self.name}: {reason}"
        log.error("safety stop: %s; holding the arm", self._reason)
        try:
            done = self._hold()
        except Exception as err:  # noqa: BLE001 (best effort: the stop must still be reported)
            done = f"holding the arm failed: {err}"
            log.error("safety stop (%s): %s", self.name, done)
        self._reason += f"; {done}; reset() to continue"

    def _watch(self) -> None:
        poll = min(max(self.margin_s / 10.0, 0.002), 0.02)
        while not self._closed.wait(poll):
            with self._lock:
                now = time.monotonic()
                if self._reason is not None or self._due is None or now <= self._due + self.margin_s:
                    continue
                if self._in_step:
                    self._trip(f"control step overran while {self._activity}: the observation is "
                               f"{now - self._due:.3f} s late ({self._limits()})")
                else:
                    self._trip(f"no step() for {self._since_obs(now):.3f} s after the last observation "
                               f"({self._limits()}): the client side stalled")

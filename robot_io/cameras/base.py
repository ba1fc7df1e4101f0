"""What every camera shares: its config, the frames it delivers, its error, and the source protocol."""

from __future__ import annotations

import dataclasses
import re
import time
from typing import Protocol

import numpy as np

KINDS = ("realsense", "opencv", "synthetic")


class CameraError(RuntimeError):
    """A camera could not be opened or stopped delivering frames; the message names the camera."""

    def __init__(self, camera: str, reason: str):
        self.camera, self.reason = camera, reason
        super().__init__(f"camera {camera!r}: {reason}")


@dataclasses.dataclass(frozen=True)
class CameraConfig:
    """One camera of a robot, as the task config describes it.

    Attributes:
      name: camera name; the observation key is `image_<name>` (letters, digits, `_`).
      kind: `realsense`, `opencv` (any V4L2 / OpenCV device or a video file) or `synthetic`.
      device: RealSense serial number; for opencv a `/dev/video*` path, an integer index as a
        string, or a video file path; ignored by synthetic.
      size: (height, width) of the images handed to the policy.
      crop: (top, left, height, width) in source pixels, applied before the resize; None = whole.
      fps: frame rate requested from the device (a video file or the synthetic source is paced at it).
      stale_after_s: a newest frame older than this counts as a camera that disappeared.
      capture_size: (height, width) requested from the device; None = RealSense 480x640, OpenCV the
        driver's default, synthetic 96x128.
    """

    name: str
    kind: str
    device: str = ""
    size: tuple[int, int] = (128, 128)
    crop: tuple[int, int, int, int] | None = None
    fps: int = 30
    stale_after_s: float = 0.5
    capture_size: tuple[int, int] | None = None

    def __post_init__(self):
        if not re.fullmatch(r"[A-Za-z0-9_]+", str(self.name)):
            raise ValueError(f"camera name {self.name!r} must be letters, digits or '_' (it becomes image_<name>)")
        if self.kind not in KINDS:
            raise ValueError(f"camera {self.name!r}: kind {self.kind!r} is not one of {KINDS}")
        object.__setattr__(self, "device", str(self.device))
        object.__setattr__(self, "size", self._ints("size", self.size, 2, minimum=1))
        if self.crop is not None:
            crop = self._ints("crop", self.crop, 4, minimum=0)
            if crop[2] < 1 or crop[3] < 1:
                raise ValueError(f"camera {self.name!r}: crop height and width must be positive, got {crop}")
            object.__setattr__(self, "crop", crop)
        if self.capture_size is not None:
            object.__setattr__(self, "capture_size", self._ints("capture_size", self.capture_size, 2, minimum=1))
        if not self.fps > 0:
            raise ValueError(f"camera {self.name!r}: fps must be positive, got {self.fps}")
        if not self.stale_after_s > 0:
            raise ValueError(f"camera {self.name!r}: stale_after_s must be positive, got {self.stale_after_s}")

    def _ints(self, field: str, value, count: int, minimum: int) -> tuple[int, ...]:
        try:
            out = tuple(int(v) for v in value)
        except (TypeError, ValueError):
            out = ()
        if len(out) != count or min(out) < minimum:
            raise ValueError(f"camera {self.name!r}: {field} must be {count} integers >= {minimum}, got {value!r}")
        return out


@dataclasses.dataclass(frozen=True)
class Frame:
    """One processed frame: `image` uint8 HxWx3 RGB, `timestamp` (time.monotonic() at capture) and
    `index` (frames this camera delivered before it, from 0)."""

    image: np.ndarray
    timestamp: float
    index: int


class FrameSource(Protocol):
    """A device that hands out raw frames; a `Camera` drives it from its reader thread.

    `read()` blocks until the next frame and returns it as uint8 HxWx3 RGB with its capture time
    (time.monotonic()); it raises `CameraError` when the device is gone.
    """

    def open(self) -> None: ...

    def read(self) -> tuple[np.ndarray, float]: ...

    def close(self) -> None: ...


class Pacer:
    """Sleeps so successive `wait()` calls return 1/fps apart (never bursting to catch up)."""

    def __init__(self, fps: float):
        self.period = 1.0 / fps
        self._next = time.monotonic()

    def wait(self) -> None:
        now = time.monotonic()
        self._next = max(self._next + self.period, now)
        time.sleep(self._next - now)

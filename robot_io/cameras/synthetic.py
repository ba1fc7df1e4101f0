"""A synthetic camera for tests and dry runs: a deterministic moving pattern at a set frame rate.

Frame n is `synthetic_image(n, height, width)`: a colour gradient whose blue channel steps with
n, and a white vertical bar at column n mod width. Test hooks: `fail_after=N` makes reads fail
after N frames (a camera unplugged), `disconnect()` does so at once, `disconnect(hang=True)`
makes reads block instead (a camera that stalls without an error).
"""

from __future__ import annotations

import threading
import time

import numpy as np

from vlarft.robot_io.cameras.base import CameraConfig, CameraError, Pacer

DEFAULT_CAPTURE_SIZE = (96, 128)


def synthetic_image(n: int, height: int, width: int) -> np.ndarray:
    """Frame `n` of the synthetic pattern, uint8 HxWx3 RGB."""
    rows = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    cols = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    image = np.empty((height, width, 3), np.uint8)
    image[..., 0] = cols.astype(np.uint8)
    image[..., 1] = rows.astype(np.uint8)
    image[..., 2] = (8 * n) % 256
    image[:, n % width] = 255
    return image


class SyntheticSource:
    """`FrameSource` producing `synthetic_image(n, ...)` every 1/fps seconds."""

    def __init__(self, config: CameraConfig, fail_after: int | None = None):
        self.config, self.fail_after = config, fail_after
        self.height, self.width = config.capture_size or DEFAULT_CAPTURE_SIZE
        self.frames_read = 0
        self._disconnected = False
        self._hang = threading.Event()
        self._closed = threading.Event()
        self._pacer = Pacer(config.fps)

    def open(self) -> None:
        self._pacer = Pacer(self.config.fps)

    def disconnect(self, hang: bool = False) -> None:
        """From now on reads fail (or, with `hang`, block until `close()`)."""
        if hang:
            self._hang.set()
        else:
            self._disconnected = True

    def read(self) -> tuple[np.ndarray, float]:
        if self._hang.is_set():
            self._closed.wait()
            raise CameraError(self.config.name, "synthetic camera closed while stalled")
        if self._disconnected or (self.fail_after is not None and self.frames_read >= self.fail_after):
            raise CameraError(self.config.name, f"synthetic camera disconnected after {self.frames_read} frame(s)")
        self._pacer.wait()
        image = synthetic_image(self.frames_read, self.height, self.width)
        self.frames_read += 1
        return image, time.monotonic()

    def close(self) -> None:
        self._closed.set()

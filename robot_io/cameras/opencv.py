"""Any V4L2 / OpenCV camera (or a video file) through `cv2.VideoCapture`.

`device` is a `/dev/video*` path, an integer index as a string ("0"), or a video file path. A
video file is paced at `fps`, so it plays like a live camera; its end looks exactly like an
unplugged USB camera: reads start failing, and after `MAX_FAILED_READS` in a row the source
raises `CameraError`. Frames arrive BGR and are handed out RGB.
"""

from __future__ import annotations

import glob
import os
import time

import numpy as np

from vlarft.robot_io.cameras.base import CameraConfig, CameraError, Pacer

MAX_FAILED_READS = 3
INSTALL_HINT = "pip install 'vlarft[opencv]'"


def import_cv2(camera: str):
    """`cv2`, or CameraError naming the camera and the install command."""
    try:
        import cv2
    except ImportError as err:
        raise CameraError(camera, f"opencv is not installed: {INSTALL_HINT}") from err
    return cv2


class OpenCVSource:
    """`FrameSource` reading `cv2.VideoCapture(device)`."""

    def __init__(self, config: CameraConfig):
        self.config = config
        self.device = config.device
        self.is_file = os.path.isfile(self.device) and not self.device.startswith("/dev/")
        self._capture = None
        self._pacer: Pacer | None = None

    def open(self) -> None:
        cv2 = import_cv2(self.config.name)
        if not self.device:
            raise CameraError(self.config.name, "opencv camera needs device= (/dev/videoN, an index, or a video file)")
        target = int(self.device) if self.device.isdigit() else self.device
        capture = cv2.VideoCapture(target)
        if not capture.isOpened():
            capture.release()
            found = sorted(glob.glob("/dev/video*"))
            raise CameraError(self.config.name, f"cannot open opencv device {self.device!r}; "
                                                f"video devices present: {found or 'none'}")
        if not self.is_file:
            capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # keep the driver from queueing old frames
            capture.set(cv2.CAP_PROP_FPS, self.config.fps)
            if self.config.capture_size:
                capture.set(cv2.CAP_PROP_FRAME_HEIGHT, self.config.capture_size[0])
                capture.set(cv2.CAP_PROP_FRAME_WIDTH, self.config.capture_size[1])
        self._capture, self._cv2 = capture, cv2
        self._pacer = Pacer(self.config.fps) if self.is_file else None

    def read(self) -> tuple[np.ndarray, float]:
        if self._capture is None:
            raise CameraError(self.config.name, "read() before open()")
        for _ in range(MAX_FAILED_READS):
            if self._pacer is not None:
                self._pacer.wait()
            ok, bgr = self._capture.read()
            if ok and bgr is not None:
                return self._cv2.cvtColor(bgr, self._cv2.COLOR_BGR2RGB), time.monotonic()
        what = "the video file ended" if self.is_file else "the device stopped delivering frames (unplugged?)"
        raise CameraError(self.config.name, f"opencv {self.device!r}: {MAX_FAILED_READS} reads in a row "
                                            f"failed: {what}")

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None

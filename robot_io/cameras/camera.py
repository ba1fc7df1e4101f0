"""`Camera`: a frame source driven by its own reader thread that keeps only the newest frame.

The thread reads, crops and resizes every frame (`CameraConfig.crop`, `.size`) and replaces the
previous one, so a slow consumer always gets the newest image and never a backlog. `latest()`
raises `CameraError` naming the camera when the thread died (the device disappeared), or when
the newest frame is older than `stale_after_s` (the device stalled).
"""

from __future__ import annotations

import threading
import time

import numpy as np

from vlarft.robot_io.cameras.base import CameraConfig, CameraError, Frame, FrameSource
from vlarft.robot_io.cameras.processing import crop_and_resize


def make_source(config: CameraConfig) -> FrameSource:
    """The frame source of `config.kind`; only that kind's dependencies are imported."""
    if config.kind == "realsense":
        from vlarft.robot_io.cameras.realsense import RealSenseSource

        return RealSenseSource(config)
    if config.kind == "opencv":
        from vlarft.robot_io.cameras.opencv import OpenCVSource

        return OpenCVSource(config)
    from vlarft.robot_io.cameras.synthetic import SyntheticSource

    return SyntheticSource(config)


class Camera:
    """One camera: `start()` opens it and starts the reader thread, `latest()` gives the newest
    processed `Frame`, `close()` stops it. `source` is the underlying `FrameSource`."""

    def __init__(self, config: CameraConfig, source: FrameSource):
        self.config, self.source = config, source
        self._latest: Frame | None = None
        self._error: CameraError | None = None
        self._new_frame = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def name(self) -> str:
        return self.config.name

    def _describe(self) -> str:
        return f"{self.config.kind} {self.config.device!r}" if self.config.device else self.config.kind

    def start(self) -> None:
        """Opens the source (errors name the camera) and starts the reader thread."""
        if self._thread is not None or self._stop.is_set():
            raise CameraError(self.name, "already started (or closed); make a new camera")
        try:
            self.source.open()
        except CameraError:
            raise
        except Exception as err:  # a driver's own exception type
            raise CameraError(self.name, f"could not open {self._describe()}: {err}") from err
        self._thread = threading.Thread(target=self._run, name=f"camera-{self.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        index = 0
        while not self._stop.is_set():
            try:
                raw, timestamp = self.source.read()
                image = crop_and_resize(np.asarray(raw, np.uint8), self.config.size, self.config.crop)
            except Exception as err:
                if not self._stop.is_set():
                    error = err if isinstance(err, CameraError) else CameraError(
                        self.name, f"{self._describe()} failed: {err}")
                    with self._new_frame:
                        self._error = error
                        self._new_frame.notify_all()
                return
            with self._new_frame:
                self._latest = Frame(image=image, timestamp=timestamp, index=index)
                self._new_frame.notify_all()
            index += 1

    def wait_for_frame(self, timeout_s: float) -> Frame:
        """Blocks until the first frame arrived (or the thread died); CameraError after `timeout_s`."""
        with self._new_frame:
            self._new_frame.wait_for(lambda: self._latest is not None or self._error is not None, timeout_s)
        if self._error is None and self._latest is None:
            raise CameraError(self.name, f"{self._describe()} delivered no frame within {timeout_s:.1f} s")
        return self.latest()

    def latest(self) -> Frame:
        """The newest frame; CameraError if the camera died, never delivered, or went stale."""
        with self._new_frame:
            frame, error = self._latest, self._error
        if error is not None:
            raise CameraError(self.name, error.reason) from error
        if self._thread is None or self._stop.is_set():
            raise CameraError(self.name, "not running (start() it first)")
        if frame is None:
            raise CameraError(self.name, "no frame yet")
        age = time.monotonic() - frame.timestamp
        if age > self.config.stale_after_s:
            raise CameraError(self.name, f"newest frame is {age:.2f} s old (stale_after_s="
                                         f"{self.config.stale_after_s}): the camera stopped delivering frames")
        return frame

    def close(self) -> None:
        """Stops the reader thread and closes the source; safe to call twice."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=max(2.0 / self.config.fps, 0.2))
        try:
            self.source.close()
        finally:
            if thread is not None:
                thread.join(timeout=1.0)


def make_camera(config: CameraConfig, source: FrameSource | None = None) -> Camera:
    """A (not yet started) `Camera` for `config`; `source` overrides the one `config.kind` names."""
    return Camera(config, source if source is not None else make_source(config))

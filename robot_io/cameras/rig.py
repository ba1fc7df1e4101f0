"""`CameraRig`: all cameras of a robot, started together, read as one dict of newest images."""

from __future__ import annotations

import time
from collections.abc import Iterable

import numpy as np

from vlarft.robot_io.cameras.base import CameraConfig, CameraError, Frame
from vlarft.robot_io.cameras.camera import Camera, make_camera

START_TIMEOUT_S = 10.0


class CameraRig:
    """Cameras by name; `start()`, then `images()` / `frames()` every control step, then `close()`.

    Usable as a context manager (`with CameraRig(configs) as rig:` starts and closes it).
    `cameras` maps each name to its `Camera` (its `source` is reachable for tests).
    """

    def __init__(self, configs: Iterable[CameraConfig | Camera], start_timeout_s: float = START_TIMEOUT_S):
        self.cameras: dict[str, Camera] = {}
        for item in configs:
            camera = item if isinstance(item, Camera) else make_camera(item)
            if camera.name in self.cameras:
                raise ValueError(f"two cameras are named {camera.name!r}")
            self.cameras[camera.name] = camera
        if not self.cameras:
            raise ValueError("a CameraRig needs at least one camera")
        self.start_timeout_s = start_timeout_s

    @property
    def sizes(self) -> dict[str, tuple[int, int]]:
        """Camera name -> (height, width) of its images (`RobotSpec.cameras`)."""
        return {name: camera.config.size for name, camera in self.cameras.items()}

    def start(self) -> "CameraRig":
        """Opens every camera and waits for a first frame from each; on any error closes them all
        and raises `CameraError` naming the camera."""
        try:
            for camera in self.cameras.values():
                camera.start()
            deadline = time.monotonic() + self.start_timeout_s
            for camera in self.cameras.values():
                camera.wait_for_frame(max(0.0, deadline - time.monotonic()))
        except BaseException:
            self.close()
            raise
        return self

    def frames(self) -> dict[str, Frame]:
        """Newest `Frame` of every camera; CameraError naming a dead, stale or unstarted camera."""
        return {name: camera.latest() for name, camera in self.cameras.items()}

    def images(self) -> dict[str, np.ndarray]:
        """Newest processed image (uint8 HxWx3 RGB) of every camera; errors as `frames()`."""
        return {name: frame.image for name, frame in self.frames().items()}

    def close(self) -> None:
        """Stops every camera (each one even if another fails to close)."""
        failed: list[tuple[str, Exception]] = []
        for name, camera in self.cameras.items():
            try:
                camera.close()
            except Exception as err:  # keep closing the others
                failed.append((name, err))
        if failed:
            name, err = failed[0]
            raise CameraError(name, f"closing failed: {err}") from err

    def __enter__(self) -> "CameraRig":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

"""Intel RealSense colour stream through `pyrealsense2` (optional extra: `pip install 'vlarft[realsense]'`).

The camera is picked by serial number (`CameraConfig.device`); the error for an unknown serial
lists the connected ones. The colour stream runs at `capture_size` (default 480x640) and `fps`
in RGB8. A camera unplugged mid-run makes `wait_for_frames` time out, which raises `CameraError`.
"""

from __future__ import annotations

import time

import numpy as np

from vlarft.robot_io.cameras.base import CameraConfig, CameraError

INSTALL_HINT = "pip install 'vlarft[realsense]'"
DEFAULT_CAPTURE_SIZE = (480, 640)
FRAME_TIMEOUT_MS = 2000


def import_realsense(camera: str):
    """`pyrealsense2`, or CameraError naming the camera and the install command."""
    try:
        import pyrealsense2 as rs
    except ImportError as err:
        raise CameraError(camera, f"pyrealsense2 is not installed (RealSense cameras are an optional "
                                  f"extra): {INSTALL_HINT}") from err
    return rs


def connected_serials(rs) -> list[str]:
    """Serial numbers of the RealSense devices plugged in now."""
    return sorted(d.get_info(rs.camera_info.serial_number) for d in rs.context().query_devices())


class RealSenseSource:
    """`FrameSource` for one RealSense camera's colour stream."""

    def __init__(self, config: CameraConfig):
        self.config = config
        self._pipeline = None

    def open(self) -> None:
        rs = import_realsense(self.config.name)
        serials = connected_serials(rs)
        if self.config.device not in serials:
            wanted = repr(self.config.device) if self.config.device else "(device= not set)"
            raise CameraError(self.config.name, f"RealSense serial {wanted} is not connected; "
                                                f"connected serials: {serials or 'none'}")
        height, width = self.config.capture_size or DEFAULT_CAPTURE_SIZE
        rs_config = rs.config()
        rs_config.enable_device(self.config.device)
        rs_config.enable_stream(rs.stream.color, width, height, rs.format.rgb8, self.config.fps)
        pipeline = rs.pipeline()
        pipeline.start(rs_config)
        self._pipeline = pipeline

    def read(self) -> tuple[np.ndarray, float]:
        if self._pipeline is None:
            raise CameraError(self.config.name, "read() before open()")
        try:
            frames = self._pipeline.wait_for_frames(FRAME_TIMEOUT_MS)
        except RuntimeError as err:
            raise CameraError(self.config.name, f"RealSense {self.config.device}: no frame within "
                                                f"{FRAME_TIMEOUT_MS} ms (unplugged?): {err}") from err
        colour = frames.get_color_frame()
        if not colour:
            raise CameraError(self.config.name, f"RealSense {self.config.device}: frame set without colour")
        return np.array(colour.get_data(), dtype=np.uint8, copy=True), time.monotonic()

    def close(self) -> None:
        pipeline, self._pipeline = self._pipeline, None
        if pipeline is not None:
            pipeline.stop()

"""Robot cameras: RealSense, any V4L2/OpenCV device (or video file), and a synthetic one for tests.

    rig = CameraRig([CameraConfig("front", "realsense", device="123456789012", crop=(0, 80, 480, 480)),
                     CameraConfig("wrist", "opencv", device="/dev/video4", size=(128, 128))])
    with rig:                       # opens all, waits for a first frame from each
        images = rig.images()       # {"front": uint8[128,128,3], "wrist": ...}, newest frames

Each camera is a `FrameSource` (`realsense.py`, `opencv.py`, `synthetic.py`: open / read one
frame / close) driven by its own reader thread that keeps only the newest frame, cropped and
resized (`processing.crop_and_resize`) as its `CameraConfig` says, with its capture time
(`Frame.timestamp`, time.monotonic()). `images()` / `frames()` raise `CameraError` naming the
camera when its device disappeared or its newest frame is older than `stale_after_s`.
"""

from vlarft.robot_io.cameras.base import KINDS, CameraConfig, CameraError, Frame, FrameSource
from vlarft.robot_io.cameras.camera import Camera, make_camera, make_source
from vlarft.robot_io.cameras.processing import crop_and_resize, resize
from vlarft.robot_io.cameras.rig import CameraRig

__all__ = [
    "KINDS", "Camera", "CameraConfig", "CameraError", "CameraRig", "Frame", "FrameSource",
    "crop_and_resize", "make_camera", "make_source", "resize",
]

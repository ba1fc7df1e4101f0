"""Cameras: synthetic rigs (latest-frame semantics, disappearing cameras), crop + resize by hand,
the OpenCV source on a real MP4 file, and the RealSense install hint."""

import sys
import threading
import time

import imageio.v2 as imageio
import numpy as np
import pytest

from vlarft.robot_io.cameras import CameraConfig, CameraError, CameraRig, Frame, crop_and_resize, make_camera
from vlarft.robot_io.cameras.synthetic import SyntheticSource, synthetic_image


def synthetic(name, fps=100, stale_after_s=0.3, fail_after=None, **kwargs):
    config = CameraConfig(name, "synthetic", fps=fps, stale_after_s=stale_after_s, **kwargs)
    return make_camera(config, SyntheticSource(config, fail_after=fail_after))


def raises_within(rig, seconds):
    """Polls rig.images() until it raises CameraError; returns (error, seconds it took)."""
    start = time.monotonic()
    while time.monotonic() - start < seconds + 1.0:
        try:
            rig.images()
        except CameraError as err:
            return err, time.monotonic() - start
        time.sleep(0.005)
    raise AssertionError(f"no CameraError within {seconds + 1.0} s")


def test_config_validates_and_normalises():
    config = CameraConfig("front", "opencv", device=0, size=[64, 80], crop=[0, 10, 100, 120])
    assert (config.device, config.size, config.crop) == ("0", (64, 80), (0, 10, 100, 120))
    assert (config.fps, config.stale_after_s, config.capture_size) == (30, 0.5, None)
    with pytest.raises(ValueError, match="kind 'usb'"):
        CameraConfig("front", "usb")
    with pytest.raises(ValueError, match="image_<name>"):
        CameraConfig("front cam", "synthetic")
    with pytest.raises(ValueError, match="'wrist'.*crop"):
        CameraConfig("wrist", "synthetic", crop=(0, 0, 0, 10))
    with pytest.raises(ValueError, match="'wrist'.*stale_after_s"):
        CameraConfig("wrist", "synthetic", stale_after_s=0)


@pytest.mark.parametrize("use_cv2", [True, False])
def test_crop_and_resize_hand_computed(use_cv2):
    image = np.zeros((4, 6, 3), np.uint8)
    image[..., 0] = [[0, 0, 10, 20, 30, 50],
                     [0, 0, 30, 40, 70, 90],
                     [0, 0, 50, 60, 110, 130],
                     [0, 0, 0, 0, 0, 0]]
    image[..., 1] = 200
    # crop rows 0..2, columns 2..5 (top, left, height, width), then 2x2 blocks -> their means
    out = crop_and_resize(image, (1, 2), crop=(0, 2, 2, 4), use_cv2=use_cv2)
    assert out.shape == (1, 2, 3) and out.dtype == np.uint8
    assert out[..., 0].tolist() == [[25, 60]] and (out[..., 1] == 200).all() and (out[..., 2] == 0).all()
    # a non-integer factor: 3 -> 2 columns, output j averages [1.5 j, 1.5 (j + 1)) with area weights
    row = np.zeros((1, 3, 3), np.uint8)
    row[0, :, 0] = [0, 30, 60]
    assert crop_and_resize(row, (1, 2), use_cv2=use_cv2)[0, :, 0].tolist() == [10, 50]
    assert crop_and_resize(image, (4, 6), use_cv2=use_cv2) is image  # same size: untouched
    with pytest.raises(ValueError, match="does not fit in a 4x6 image"):
        crop_and_resize(image, (2, 2), crop=(2, 0, 3, 6), use_cv2=use_cv2)


def test_numpy_fallback_matches_opencv_area_resize():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (97, 131, 3), dtype=np.uint8)
    cv = crop_and_resize(image, (40, 50), crop=(3, 5, 90, 120), use_cv2=True)
    fallback = crop_and_resize(image, (40, 50), crop=(3, 5, 90, 120), use_cv2=False)
    assert np.abs(cv.astype(int) - fallback.astype(int)).max() <= 1


def test_synthetic_rig_keeps_only_the_newest_frame():
    rig = CameraRig([synthetic("front", size=(32, 48), crop=(8, 16, 64, 96)), synthetic("wrist", fps=50)])
    assert rig.sizes == {"front": (32, 48), "wrist": (128, 128)}
    with rig:
        first = rig.frames()
        assert set(first) == {"front", "wrist"} and all(isinstance(f, Frame) for f in first.values())
        time.sleep(0.2)  # a slow consumer: frames in between are dropped, not queued
        later = rig.frames()
        images = rig.images()
        for name, fps in (("front", 100), ("wrist", 50)):
            assert later[name].index - first[name].index >= 0.2 * fps * 0.5
            assert later[name].timestamp > first[name].timestamp
            assert time.monotonic() - later[name].timestamp < 0.2  # the newest, not a stale one
        assert images["front"].shape == (32, 48, 3) and images["wrist"].shape == (128, 128, 3)
        front = later["front"]  # the image is frame `index` of the pattern, cropped and resized
        want = crop_and_resize(synthetic_image(front.index, 96, 128), (32, 48), (8, 16, 64, 96))
        assert np.array_equal(front.image, want)
        stamps, indices = [], []
        for _ in range(15):
            frame = rig.frames()["front"]
            stamps.append(frame.timestamp)
            indices.append(frame.index)
            time.sleep(0.01)
        assert all(b >= a for a, b in zip(stamps, stamps[1:])) and all(b >= a for a, b in zip(indices, indices[1:]))
        assert indices[-1] > indices[0]
    alive = [t for t in threading.enumerate() if t.name.startswith("camera-")]
    assert not alive
    with pytest.raises(CameraError, match="'front'.*not running"):
        rig.images()


def test_unplugged_camera_raises_naming_it_within_stale_after():
    with CameraRig([synthetic("front"), synthetic("wrist", stale_after_s=0.3)]) as rig:
        rig.cameras["wrist"].source.disconnect()  # reads now fail, as with a USB cable pulled
        err, took = raises_within(rig, 0.3)
        assert err.camera == "wrist" and "disconnected" in str(err) and "'wrist'" in str(err)
        assert took <= 0.3


def test_stalled_camera_goes_stale_naming_it():
    with CameraRig([synthetic("front"), synthetic("wrist", stale_after_s=0.25)]) as rig:
        rig.cameras["wrist"].source.disconnect(hang=True)  # no error, frames just stop
        err, took = raises_within(rig, 0.25)
        assert err.camera == "wrist" and "s old (stale_after_s=0.25)" in str(err)
        assert 0.15 < took <= 0.25 + 0.15  # the last frame's age passes 0.25 s (+ scheduling slack)


def test_start_errors_name_the_camera_and_close_the_others():
    front = synthetic("front")
    rig = CameraRig([front, synthetic("wrist", fail_after=0)])
    with pytest.raises(CameraError, match="camera 'wrist': synthetic camera disconnected after 0"):
        rig.start()
    assert front._thread is None  # the healthy camera was closed again
    hung = synthetic("side")
    hung.source.disconnect(hang=True)
    with pytest.raises(CameraError, match="camera 'side': synthetic delivered no frame within 0.2 s"):
        CameraRig([hung], start_timeout_s=0.2).start()
    too_small = synthetic("top", crop=(0, 0, 200, 10))  # the synthetic source is 96x128
    with pytest.raises(CameraError, match="camera 'top'.*does not fit"):
        CameraRig([too_small]).start()


def test_opencv_camera_reads_a_video_file_then_reports_it_gone(tmp_path):
    path = tmp_path / "clip.mp4"
    frames = []
    for n in range(12):
        frame = np.zeros((64, 96, 3), np.uint8)
        frame[..., 0] = 220  # red, so a missing BGR -> RGB swap shows
        frame[..., 1] = 20 * n
        frames.append(frame)
    imageio.mimwrite(path, frames, fps=30, codec="libx264", quality=9, macro_block_size=16)

    config = CameraConfig("wrist", "opencv", device=str(path), size=(32, 48), fps=60, stale_after_s=0.5)
    with CameraRig([config]) as rig:
        frame = rig.frames()["wrist"]
        assert frame.image.shape == (32, 48, 3) and frame.index == 0
        assert abs(frame.image[..., 0].mean() - 220) < 8 and frame.image[..., 2].mean() < 15
        err, _ = raises_within(rig, 1.0)  # 12 frames at 60 fps: the file ends after ~0.2 s
        assert err.camera == "wrist" and "video file ended" in str(err)
        seen = rig.cameras["wrist"]
        assert seen._latest.index == len(frames) - 1  # every frame of the file was read, in order
        assert abs(seen._latest.image[..., 1].mean() - 20 * (len(frames) - 1)) < 10


def test_opencv_camera_that_cannot_open_says_so(tmp_path):
    config = CameraConfig("front", "opencv", device=str(tmp_path / "no_such_camera"))
    with pytest.raises(CameraError, match="camera 'front': cannot open opencv device .*no_such_camera"):
        CameraRig([config]).start()


def test_realsense_missing_gives_the_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyrealsense2", None)  # as if not installed (it is not)
    config = CameraConfig("front", "realsense", device="123456789012")
    with pytest.raises(CameraError, match=r"camera 'front': pyrealsense2 is not installed.*pip install 'vlarft\[realsense\]'"):
        CameraRig([config]).start()

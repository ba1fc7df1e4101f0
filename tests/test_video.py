"""Evaluation videos: scaled up to a viewable size, a banner with step, reward, success and who
acted; written as H.264 and read back with imageio."""

import imageio.v3 as iio
import numpy as np

from vlarft.agents.evaluation import evaluate
from vlarft.agents.video import BANNER_HEIGHT, FrameLabel, upscale, video_frame, write_video
from vlarft.robot_io.factory import make_env


def observation(value):
    return {"image_front": np.full((64, 64, 3), value, np.uint8), "image_wrist": np.full((64, 64, 3), 255 - value,
                                                                                          np.uint8),
            "state": np.zeros(19, np.float32)}


def test_upscale_is_whole_factor_nearest():
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    big = upscale(image, min_height=5)  # factor ceil(5/2) = 3
    assert big.shape == (6, 9, 3)
    assert (big[3:6, 6:9] == image[1, 2]).all() and (big[0, 0] == image[0, 0]).all()
    assert upscale(image, min_height=1).shape == image.shape


def test_video_frames_size_banner_and_read_back(tmp_path):
    labels = [FrameLabel(step=0), FrameLabel(step=1, reward=0.0), FrameLabel(step=2, reward=1.0, success=True,
                                                                             actor="human")]
    frames = [video_frame(observation(40 * i), label) for i, label in enumerate(labels)]
    assert frames[0].shape == (BANNER_HEIGHT + 256, 512, 3)  # two 64 px cameras x4, under the banner
    # the picture is the cameras repeated 4x: front left, wrist right
    assert (frames[1][BANNER_HEIGHT:, :256] == 40).all() and (frames[1][BANNER_HEIGHT:, 256:] == 215).all()
    policy_banner, human_banner = frames[1][:BANNER_HEIGHT], frames[2][:BANNER_HEIGHT]
    assert np.abs(policy_banner.astype(int) - human_banner.astype(int)).mean() > 30  # policy blue, human orange
    # the text is drawn: white pixels in the banner; different steps -> different text pixels
    assert (frames[0][:BANNER_HEIGHT] == 255).all(axis=-1).sum() > 50
    assert (frames[0][:BANNER_HEIGHT] != frames[1][:BANNER_HEIGHT]).any()

    path = write_video(frames, str(tmp_path / "v.mp4"))
    back = iio.imread(path, plugin="pyav")
    assert back.shape == (3, BANNER_HEIGHT + 256, 512, 3)
    assert np.abs(back.astype(int) - np.stack(frames).astype(int)).mean() < 6  # H.264 is lossy, not far off


def test_evaluation_video_is_viewable(tmp_path):
    """A real simulator evaluation: one frame per step plus the first, 64 px cameras scaled to 256."""

    class Still:
        def reset(self): ...
        def warm_up(self, space): ...
        def act(self, observation):
            return np.zeros(7, np.float32)

    factory = lambda: make_env("sim:pick_cube", image_size=64, max_episode_steps=6)
    result = evaluate(Still(), factory, 1, video_path=str(tmp_path / "eval.mp4"))
    assert result.lengths == [6]
    back = iio.imread(result.video_path, plugin="pyav")
    assert back.shape == (7, BANNER_HEIGHT + 256, 512, 3)

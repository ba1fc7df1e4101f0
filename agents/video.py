"""Videos a person can judge a grasp from: the cameras side by side, scaled up to at least
`MIN_VIDEO_HEIGHT` pixels, under a banner with the step, reward, success and who acted."""

from __future__ import annotations

import dataclasses
import math
import os
from functools import lru_cache
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

MIN_VIDEO_HEIGHT = 256  # pixels of camera picture, below the banner
BANNER_HEIGHT = 32  # a multiple of 16: H.264 frames stay unresized when the picture is
ACTOR_COLOURS = {"policy": (30, 70, 150), "human": (200, 90, 20)}  # banner backgrounds


@dataclasses.dataclass(frozen=True)
class FrameLabel:
    """What the banner says about one frame: step t's observation after `reward`."""

    step: int
    reward: float = 0.0
    success: bool = False
    actor: str = "policy"  # "policy" | "human"

    def text(self) -> str:
        return (f"step {self.step}   reward {self.reward:+.2f}   success {'yes' if self.success else 'no'}   "
                f"{self.actor}")


def camera_mosaic(observation: dict) -> np.ndarray:
    """All camera images of an observation side by side."""
    images = [observation[k] for k in sorted(observation) if k.startswith("image_")]
    height = max(img.shape[0] for img in images)
    return np.concatenate([np.pad(img, ((0, height - img.shape[0]), (0, 0), (0, 0))) for img in images], axis=1)


def upscale(image: np.ndarray, min_height: int = MIN_VIDEO_HEIGHT) -> np.ndarray:
    """`image` repeated by the smallest whole factor that makes it at least `min_height` high
    (nearest neighbour: every camera pixel stays a sharp square)."""
    factor = max(1, math.ceil(min_height / image.shape[0]))
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


@lru_cache(maxsize=1)
def _font() -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=18)
    except (TypeError, OSError):  # Pillow without FreeType: the small bitmap font
        return ImageFont.load_default()


def video_frame(observation: dict, label: FrameLabel) -> np.ndarray:
    """One video frame: the banner above the scaled-up camera mosaic."""
    picture = upscale(camera_mosaic(observation))
    banner = Image.new("RGB", (picture.shape[1], BANNER_HEIGHT), ACTOR_COLOURS.get(label.actor, (60, 60, 60)))
    ImageDraw.Draw(banner).text((8, 6), label.text(), fill=(255, 255, 255), font=_font())
    return np.concatenate([np.asarray(banner), picture], axis=0)


def write_video(frames: Sequence[np.ndarray], path: str, fps: float = 10.0) -> str:
    """Writes RGB frames as an H.264 MP4 (imageio-ffmpeg ships its own ffmpeg)."""
    import warnings

    import imageio.v2 as imageio

    warnings.filterwarnings("ignore", message="os.fork", category=RuntimeWarning)  # ffmpeg subprocess
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with imageio.get_writer(path, fps=fps, codec="libx264", quality=7, macro_block_size=16) as writer:
        for frame in frames:
            writer.append_data(np.asarray(frame, np.uint8))
    return path

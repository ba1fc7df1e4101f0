"""LeRobot's camera videos with PyAV: encode one episode, join episodes into one file, decode frames.

Encoding uses lerobot 0.6.1's defaults (`configs/video.py: VideoEncoderConfig`): libsvtav1 (AV1),
pix_fmt yuv420p, GOP g=2, crf=30, preset 12, svtav1-params fast-decode=0; each episode is
encoded alone (so it starts on a keyframe) and the episodes of a file are then joined by copying
their packets one after another with shifted timestamps, with `movflags=faststart` — what
lerobot does with ffmpeg's concat demuxer. Frame i of an episode is at `from_timestamp + i / fps`
in its file, with `from_timestamp` = frames before it in the file / fps.
"""

from __future__ import annotations

import dataclasses
import io
import os
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np

os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its whole configuration per encoder otherwise
# SVT-AV1 (in the av 15.1.0 wheel) kills the process with SIGFPE on frames narrower than ~26 px
# and refuses heights under 4; narrower cameras are refused before the encoder is opened.
MIN_WIDTH, MIN_HEIGHT = 32, 8


@dataclasses.dataclass(frozen=True)
class VideoEncoderSettings:
    """lerobot 0.6.1's default RGB encoder (recorded in info.json as lerobot records it)."""

    vcodec: str = "libsvtav1"  # the AV1 encoder (stream codec name "av1")
    pix_fmt: str = "yuv420p"  # 4:2:0 chroma: the main source of error at sharp colour edges
    g: int = 2  # GOP: a keyframe every 2 frames, so random access decodes at most 2 frames
    crf: int = 30  # quality (lower = better, larger files)
    preset: int = 12  # speed preset (SVT-AV1 3.x maps 12 to 10 and says so)
    fast_decode: int = 0  # svtav1-params fast-decode level

    def codec_options(self) -> dict[str, str]:
        return {"g": str(self.g), "crf": str(self.crf), "preset": str(self.preset),
                "svtav1-params": f"fast-decode={self.fast_decode}"}

    def info(self, height: int, width: int, fps: int, codec: str) -> dict:
        """The `info` of a video feature in info.json (lerobot's `get_video_info` key order)."""
        return {"video.height": height, "video.width": width, "video.codec": codec, "video.pix_fmt": self.pix_fmt,
                "video.fps": fps, "video.channels": 3, "has_audio": False, "video.g": self.g,
                "video.crf": self.crf, "video.preset": self.preset, "video.fast_decode": self.fast_decode,
                "video.video_backend": "pyav", "video.extra_options": {}, "is_depth_map": False}


class VideoDecodeError(ValueError):
    """Frames could not be found in a video file at the timestamps asked for."""


def encode_episode(frames: np.ndarray, fps: int, settings: VideoEncoderSettings = VideoEncoderSettings()) -> bytes:
    """uint8 [T, H, W, 3] RGB frames -> the bytes of an MP4 holding them at `fps` (pts i/fps)."""
    import av

    frames = np.asarray(frames, np.uint8)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 [T, H, W, 3] frames, got shape {frames.shape}")
    if frames.shape[2] < MIN_WIDTH or frames.shape[1] < MIN_HEIGHT:
        raise ValueError(f"frames of {frames.shape[1]}x{frames.shape[2]} px: {settings.vcodec} needs at least "
                         f"{MIN_HEIGHT} px high and {MIN_WIDTH} px wide (narrower frames crash SVT-AV1)")
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream(settings.vcodec, rate=fps, options=settings.codec_options())
        stream.pix_fmt = settings.pix_fmt
        stream.height, stream.width = frames.shape[1:3]
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())
    return buffer.getvalue()


def concatenate_episodes(episodes: Sequence[bytes], frame_counts: Sequence[int], fps: int, path: Path) -> str:
    """Writes the episode MP4s one after another into `path` (no re-encoding); returns the codec
    name as lerobot records it (`video.codec`, e.g. "av1")."""
    import av

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    path.parent.mkdir(parents=True, exist_ok=True)
    frames_before = 0
    with av.open(str(tmp), "w", format="mp4", options={"movflags": "faststart"}) as out:
        out_stream = None
        for data, count in zip(episodes, frame_counts):
            with av.open(io.BytesIO(data), "r") as source:
                stream = source.streams.video[0]
                if out_stream is None:
                    out_stream = out.add_stream_from_template(stream, opaque=True)
                    out_stream.time_base = stream.time_base
                    codec = stream.codec.canonical_name
                offset = int(round(Fraction(frames_before, fps) / stream.time_base))
                for packet in source.demux(stream):
                    if packet.dts is None:
                        continue
                    packet.pts += offset
                    packet.dts += offset
                    packet.stream = out_stream
                    out.mux(packet)
            frames_before += count
    os.replace(tmp, path)
    return codec


def decode_frames(path: Path, timestamps: Sequence[float], tolerance_s: float = 1e-4) -> np.ndarray:
    """uint8 [N, H, W, 3] RGB frames of `path` at `timestamps` (seconds from the file's start; the
    nearest frame within `tolerance_s`, lerobot's default), else VideoDecodeError."""
    import av

    timestamps = np.asarray(timestamps, np.float64)
    first, last = timestamps.min(), timestamps.max()
    found: dict[int, np.ndarray] = {}
    try:
        with av.open(str(path), "r") as container:
            stream = container.streams.video[0]
            container.seek(int(first / stream.time_base), stream=stream, backward=True, any_frame=False)
            times, images = [], []
            for frame in container.decode(stream):
                t = float(frame.pts * stream.time_base)
                if t > last + tolerance_s:
                    break
                if t >= first - tolerance_s:
                    times.append(t)
                    images.append(frame.to_ndarray(format="rgb24"))
    except (av.FFmpegError, OSError) as e:
        raise VideoDecodeError(f"{path}: cannot decode ({type(e).__name__}: {e})") from None
    times = np.asarray(times)
    for i, ts in enumerate(timestamps):
        if not len(times) or np.abs(times - ts).min() > tolerance_s:
            nearest = f"; nearest frame at {times[np.abs(times - ts).argmin()]:.6f} s" if len(times) else ""
            raise VideoDecodeError(f"{path}: no frame at {ts:.6f} s (tolerance {tolerance_s} s){nearest}")
        found[i] = images[int(np.abs(times - ts).argmin())]
    return np.stack([found[i] for i in range(len(timestamps))])


def probe(path: Path) -> dict:
    """Stream facts of an MP4: codec, size, pixel format, base rate, frames, duration (s)."""
    import av

    with av.open(str(path), "r") as container:
        stream = container.streams.video[0]
        return {"codec": stream.codec.canonical_name, "height": stream.height, "width": stream.width,
                "pix_fmt": stream.pix_fmt, "fps": int(stream.base_rate), "frames": stream.frames,
                "duration_s": float(stream.duration * stream.time_base) if stream.duration else None}

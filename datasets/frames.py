"""Camera frames as a dataset stores them: JPEG, encoded and decoded by the one TFDS feature.

`image_feature` is the TFDS feature of a frame (what the RLDS writer and reader use),
`as_stored` a frame after that round trip (what a policy trained on a dataset saw), and
`JpegFrames` one camera's frames of an episode already encoded, so the recorder can encode each
frame once and the conversion job hands the same bytes to the dataset without decoding and
re-encoding them.
"""

from __future__ import annotations

import io
from typing import Any, Sequence

import numpy as np
from PIL import Image as PilImage


def image_feature(shape):
    """The TFDS feature of one camera frame: JPEG inside the dataset (encode_jpeg's defaults on
    write, decode_image on read)."""
    import tensorflow_datasets as tfds

    return tfds.features.Image(shape=tuple(shape), dtype=np.uint8, encoding_format="jpeg")


_FEATURES: dict[tuple, Any] = {}


def _feature(shape: tuple) -> Any:
    feature = _FEATURES.get(shape)
    if feature is None:
        feature = _FEATURES[shape] = image_feature(shape)
    return feature


def encode_frame(image: np.ndarray) -> bytes:
    """One HxWx3 uint8 frame as the dataset's JPEG bytes."""
    image = np.asarray(image, np.uint8)
    return _feature(image.shape).encode_example(image)


def decode_frame(data: bytes, shape: tuple) -> np.ndarray:
    """JPEG bytes -> the HxWx3 uint8 frame a dataset reader returns for them."""
    return np.asarray(_feature(tuple(shape)).decode_example(data))


def as_stored(image: np.ndarray) -> np.ndarray:
    """A camera frame exactly as a converted dataset returns it: JPEG-encoded and decoded by the
    same feature the RLDS writer and reader use. A policy trained on a dataset sees its frames
    through this, so acting on a live frame and training on a recorded one give one input."""
    image = np.asarray(image, np.uint8)
    return decode_frame(encode_frame(image), image.shape)


class FrameError(ValueError):
    """A JPEG frame is unreadable or has the wrong size; `step` is its index."""

    def __init__(self, step: int, reason: str):
        self.step = step
        super().__init__(reason)


class JpegFrames(Sequence[bytes]):
    """One camera's frames of an episode as JPEG bytes, with their decoded shape (T, H, W, 3)."""

    def __init__(self, data: Sequence[bytes], frame_shape: tuple[int, int, int]):
        self.data = list(data)
        self.frame_shape = tuple(int(d) for d in frame_shape)

    @classmethod
    def encode(cls, frames: np.ndarray) -> "JpegFrames":
        frames = np.asarray(frames, np.uint8)
        return cls([encode_frame(f) for f in frames], frames.shape[1:])

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.data), *self.frame_shape)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index):
        return self.data[index]

    def decode(self) -> np.ndarray:
        """All frames as one uint8[T, H, W, 3] array, decoded as a dataset reader decodes them."""
        out = np.empty(self.shape, np.uint8)
        for step, data in enumerate(self.data):
            try:
                out[step] = decode_frame(data, self.frame_shape)
            except Exception as e:  # TensorFlow's decode errors are not ValueErrors
                raise FrameError(step, f"frame {step}: undecodable JPEG ({type(e).__name__})") from None
        return out

    def check(self) -> None:
        """Raises FrameError for the first frame that is not a JPEG of this shape (reads headers
        only, so it costs microseconds per frame)."""
        height, width, _ = self.frame_shape
        for step, data in enumerate(self.data):
            try:
                with PilImage.open(io.BytesIO(data)) as image:
                    size, kind = image.size, image.format
            except Exception as e:  # Pillow raises several types for damaged data
                raise FrameError(step, f"unreadable JPEG frame ({type(e).__name__}: {e})") from None
            if kind != "JPEG" or size != (width, height):
                raise FrameError(step, f"expected a {width}x{height} JPEG frame, got {kind} {size[0]}x{size[1]}")

    def to_columns(self) -> dict[str, np.ndarray]:
        """Plain arrays for an `.npz` file: concatenated bytes, offsets, frame shape."""
        offsets = np.zeros(len(self.data) + 1, np.int64)
        offsets[1:] = np.cumsum([len(d) for d in self.data])
        return {"jpeg": np.frombuffer(b"".join(self.data), np.uint8), "offsets": offsets,
                "frame_shape": np.asarray(self.frame_shape, np.int64)}

    @classmethod
    def from_columns(cls, jpeg: np.ndarray, offsets: np.ndarray, frame_shape: np.ndarray) -> "JpegFrames":
        blob = np.asarray(jpeg, np.uint8).tobytes()
        offsets = np.asarray(offsets, np.int64)
        if offsets.ndim != 1 or len(offsets) < 1 or offsets[0] != 0 or offsets[-1] != len(blob) \
                or (np.diff(offsets) < 0).any():
            raise ValueError(f"frame offsets do not match {len(blob)} bytes of frames")
        return cls([blob[a:b] for a, b in zip(offsets[:-1], offsets[1:])], tuple(frame_shape))

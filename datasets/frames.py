"""Camera frames as a dataset stores them: JPEG, encoded and decoded by the one TFDS feature.

`image_feature` is the TFDS feature of a frame (what the RLDS writer and reader use),
`as_stored` a frame after that round trip (what a policy trained on a dataset saw), and
`JpegFrames` one camera's frames of an episode already encoded, so the recorder can encode each
frame once and the conversion job hands the same bytes to the dataset without decoding and
re-encoding them.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


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


# Start-of-frame markers (baseline, progressive, lossless, arithmetic): they carry the frame's size.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def jpeg_frame_shape(data: bytes) -> tuple[int, int, int]:
    """(height, width, components) from a JPEG's frame header; ValueError unless `data` starts
    with the start-of-image marker, its segments lead to a frame header, and it ends with the
    end-of-image marker (zero padding after it is allowed), i.e. unless it is a whole JPEG."""
    data = bytes(data)
    if data[:2] != b"\xff\xd8":
        raise ValueError("no JPEG start-of-image marker")
    if not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        raise ValueError("no end-of-image marker: the frame is cut off")
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            raise ValueError(f"no segment marker at byte {at}")
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            at += 2
            continue
        length = int.from_bytes(data[at + 2:at + 4], "big")
        if marker in _SOF_MARKERS:
            if at + 10 > len(data) or length < 8:
                raise ValueError("a cut-off frame header")
            height, width = int.from_bytes(data[at + 5:at + 7], "big"), int.from_bytes(data[at + 7:at + 9], "big")
            return height, width, data[at + 9]
        if marker == 0xDA or length < 2:  # scan data before any frame header, or a bad length
            raise ValueError(f"no frame header before byte {at}")
        at += 2 + length
    raise ValueError("no frame header")


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
        """Raises FrameError for the first frame that is not a whole JPEG of this shape: it reads
        the markers up to the frame header and the end-of-image marker (so a cut-off frame is
        caught without decoding it), a few microseconds per frame."""
        for step, data in enumerate(self.data):
            try:
                shape = jpeg_frame_shape(data)
            except ValueError as e:
                raise FrameError(step, f"unreadable JPEG frame ({e})") from None
            if shape != self.frame_shape:
                raise FrameError(step, f"expected a {self.frame_shape[1]}x{self.frame_shape[0]}x{self.frame_shape[2]} "
                                       f"JPEG frame, got {shape[1]}x{shape[0]}x{shape[2]}")

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

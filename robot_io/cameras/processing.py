"""Crop + resize of camera images: one pure function, OpenCV when installed, else numpy.

Both resize backends average pixel areas (OpenCV's INTER_AREA; numpy: exact area weights), so a
downscale by an integer factor is the mean of each block on both. Upscaling with the numpy
fallback repeats pixels (box filter) where OpenCV interpolates.
"""

from __future__ import annotations

import functools

import numpy as np


@functools.cache
def _cv2():
    try:
        import cv2
    except ImportError:
        return None
    return cv2


def _area_weights(source: int, target: int) -> np.ndarray:
    """(target, source) matrix: row i averages source interval [i, i+1) * source / target."""
    edges = np.arange(target + 1) * (source / target)
    lo, hi = edges[:-1, None], edges[1:, None]
    pixel = np.arange(source)[None, :]
    overlap = np.clip(np.minimum(hi, pixel + 1) - np.maximum(lo, pixel), 0.0, None)
    return overlap / overlap.sum(axis=1, keepdims=True)


def area_resize_numpy(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area-average resize of an HxWxC uint8 image to `size` = (height, width), numpy only."""
    rows = _area_weights(image.shape[0], size[0])
    cols = _area_weights(image.shape[1], size[1])
    tall = np.tensordot(rows, image.astype(np.float32), axes=(1, 0))  # (height', W, C)
    out = np.tensordot(tall, cols, axes=(1, 1)).transpose(0, 2, 1)  # (height', width', C)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def resize(image: np.ndarray, size: tuple[int, int], *, use_cv2: bool | None = None) -> np.ndarray:
    """`image` (uint8 HxWx3) resized to `size` = (height, width); a no-op at the same size.

    `use_cv2`: None = OpenCV's INTER_AREA when importable, else the numpy area resize.
    """
    height, width = int(size[0]), int(size[1])
    if image.shape[:2] == (height, width):
        return image
    cv2 = _cv2() if use_cv2 is not False else None
    if use_cv2 and cv2 is None:
        raise ImportError("resize(use_cv2=True) needs opencv: pip install 'vlarft[opencv]'")
    if cv2 is None:
        return area_resize_numpy(image, (height, width))
    return cv2.resize(np.ascontiguousarray(image), (width, height), interpolation=cv2.INTER_AREA)


def crop_and_resize(image: np.ndarray, size: tuple[int, int],
                    crop: tuple[int, int, int, int] | None = None, *, use_cv2: bool | None = None) -> np.ndarray:
    """Crops `image` to `crop` = (top, left, height, width) source pixels, then resizes to `size`.

    Raises ValueError when the crop does not fit inside the image.
    """
    if crop is not None:
        top, left, height, width = crop
        if top + height > image.shape[0] or left + width > image.shape[1]:
            raise ValueError(f"crop (top, left, height, width) = {tuple(crop)} does not fit in a "
                             f"{image.shape[0]}x{image.shape[1]} image")
        image = image[top:top + height, left:left + width]
    return resize(image, size, use_cv2=use_cv2)

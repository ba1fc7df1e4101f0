"""Benchmark: conversion steps/s next to the JPEG-encoding rate of the same images.

    python tools/benchmark_conversion.py [--episodes=20] [--image_size=128] [--input=DIR]

Records simulator demos (or reads `--input`), JPEG-encodes every image of those episodes with
the encoder TFDS uses, then converts them with the Beam job on the DirectRunner, all in one
process: first (imports and pipeline start-up included), again (warm), a quarter of them (so the
marginal rate, all minus a quarter, excludes the pipeline's fixed cost), and the same episodes
rewritten with pixel frames (what raw files held before frames were stored as JPEG at recording),
which the job must encode. The ratios against the encode-only rate are the figures we track.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def jpeg_encode_rate(files: list[Path]) -> tuple[float, int, int]:
    """(seconds, images, steps) to JPEG-encode every image of these raw episodes."""
    import tensorflow_datasets as tfds

    from vlarft.datasets.raw_episodes import read_raw_episode

    episodes = [read_raw_episode(f)[0] for f in files]
    images = [arr for ep in episodes for key, arr in ep["steps"]["observation"].items() if key.startswith("image_")]
    steps = sum(len(ep["steps"]["is_first"]) for ep in episodes)
    feature = tfds.features.Image(shape=images[0].shape[1:], dtype=np.uint8, encoding_format="jpeg")
    feature.encode_example(images[0][0])  # warm-up
    start = time.perf_counter()
    count = 0
    for stack in images:
        for frame in stack:
            feature.encode_example(frame)
            count += 1
    return time.perf_counter() - start, count, steps


def lossless_copy(files: list[Path], out: Path) -> Path:
    """The same episodes as raw files holding pixel frames (what version 1 files held)."""
    from vlarft.datasets.raw_episodes import read_raw_episode, write_raw_episode

    out.mkdir(parents=True)
    for f in files:
        episode, spec = read_raw_episode(f)
        write_raw_episode(out / f.name, episode, spec, jpeg_frames=False)
    return out


def timed_convert(inputs: list[str], out: Path) -> float:
    from vlarft.pipelines.convert_demos import convert

    start = time.perf_counter()
    convert(inputs, str(out), "bench", log=lambda m: None)
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--image_size", type=int, default=128)
    parser.add_argument("--task", default="pick_cube")
    parser.add_argument("--input", default="", help="existing raw episode dir (skips recording)")
    args = parser.parse_args(argv)

    from vlarft.datasets.raw_episodes import list_raw_episodes
    from vlarft.tools.record_demos import record

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        raw = Path(args.input) if args.input else tmp / "raw"
        if not args.input:
            record(f"sim:{args.task}", "scripted", args.episodes, str(raw), image_size=args.image_size)
        files = list_raw_episodes(raw)
        encode_s, images, steps = jpeg_encode_rate(files)
        cold_s = timed_convert([str(raw)], tmp / "cold")  # pipeline start-up and imports included
        warm_s = timed_convert([str(raw)], tmp / "warm")
        quarter = files[: max(1, len(files) // 4)]
        quarter_steps = sum(len(read_steps(f)) for f in quarter)
        quarter_s = timed_convert([str(f) for f in quarter], tmp / "quarter")
        pixels_s = timed_convert([str(lossless_copy(files, tmp / "pixels"))], tmp / "from_pixels")
    encode_rate = steps / encode_s
    marginal_rate = (steps - quarter_steps) / max(warm_s - quarter_s, 1e-9)
    figures = {
        "episodes": len(files), "steps": steps, "images": images,
        "conversion_steps_per_s": steps / cold_s, "conversion_warm_steps_per_s": steps / warm_s,
        "conversion_marginal_steps_per_s": marginal_rate,
        "conversion_from_pixel_frames_steps_per_s": steps / pixels_s,
        "jpeg_encode_steps_per_s": encode_rate, "jpeg_encode_images_per_s": images / encode_s,
        "conversion_over_encode_ratio": (steps / cold_s) / encode_rate,
        "warm_over_encode_ratio": (steps / warm_s) / encode_rate,
        "marginal_over_encode_ratio": marginal_rate / encode_rate,
        "jpeg_frames_over_pixel_frames": pixels_s / warm_s,
        "wall_s": {"cold": cold_s, "warm": warm_s, "quarter": quarter_s, "from_pixels": pixels_s,
                   "encode_only": encode_s},
    }
    print(f"conversion, first in process : {steps / cold_s:8.1f} steps/s ({cold_s:.1f} s, {steps} steps, "
          f"{len(files)} episodes, DirectRunner, imports + start-up included)")
    print(f"conversion, warm             : {steps / warm_s:8.1f} steps/s ({warm_s:.1f} s)")
    print(f"conversion, marginal         : {marginal_rate:8.1f} steps/s (all minus the first quarter: "
          f"the rate once the pipeline's fixed cost is paid)")
    print(f"conversion from pixel frames : {steps / pixels_s:8.1f} steps/s ({pixels_s:.1f} s; raw files without "
          f"JPEG frames, so the job encodes every frame)")
    print(f"JPEG encode only             : {encode_rate:8.1f} steps/s ({images} images, {images / encode_s:.0f} images/s)")
    print(f"ratios vs encode-only: first {figures['conversion_over_encode_ratio']:.3f}, warm "
          f"{figures['warm_over_encode_ratio']:.3f}, marginal {figures['marginal_over_encode_ratio']:.3f}; "
          f"JPEG-frame raw files convert {figures['jpeg_frames_over_pixel_frames']:.2f}x faster than pixel ones")
    target = ">= 0.5" if len(files) >= 150 else ">= 0.25"
    n = len(files)
    print(json.dumps({"figures": {
        f"conversion_over_encode_{n}_episodes": {"value": round(figures["conversion_over_encode_ratio"], 3),
                                                 "target": target},
        f"conversion_marginal_over_encode_{n}_episodes": {"value": round(figures["marginal_over_encode_ratio"], 3),
                                                          "target": target},
        f"conversion_steps_per_s_{n}_episodes": {"value": round(figures["conversion_steps_per_s"], 1),
                                                 "target": None}}, "details": figures}))
    return 0


def read_steps(path: Path):
    from vlarft.datasets.raw_episodes import read_raw_episode

    return read_raw_episode(path, decode_frames=False)[0]["steps"]["is_first"]


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: conversion steps/s next to the JPEG-encoding rate of the same images.

    python tools/benchmark_conversion.py [--episodes=20] [--image_size=128] [--input=DIR]

Records simulator demos (or reads `--input`), converts them with the Beam job on the
DirectRunner, then JPEG-encodes every image of the same episodes with the encoder TFDS uses, in
the same process. The ratio (conversion rate / encode-only rate) is the figure we track: 1.0
would mean the pipeline costs nothing beyond the JPEG encoding it cannot avoid.
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--image_size", type=int, default=128)
    parser.add_argument("--task", default="pick_cube")
    parser.add_argument("--input", default="", help="existing raw episode dir (skips recording)")
    args = parser.parse_args(argv)

    from vlarft.datasets.raw_episodes import list_raw_episodes
    from vlarft.pipelines.convert_demos import convert
    from vlarft.tools.record_demos import record

    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(args.input) if args.input else Path(tmp) / "raw"
        if not args.input:
            record(f"sim:{args.task}", "scripted", args.episodes, str(raw), image_size=args.image_size)
        files = list_raw_episodes(raw)
        start = time.perf_counter()
        result = convert([str(raw)], str(Path(tmp) / "data"), "bench", log=lambda m: None)
        convert_s = time.perf_counter() - start
        encode_s, images, steps = jpeg_encode_rate(files)
    figures = {
        "episodes": len(files), "steps": steps, "images": images,
        "conversion_steps_per_s": steps / convert_s,
        "jpeg_encode_steps_per_s": steps / encode_s,
        "jpeg_encode_images_per_s": images / encode_s,
        "conversion_over_encode_ratio": (steps / convert_s) / (steps / encode_s),
        "conversion_wall_s": convert_s, "runner": result.runner,
    }
    print(f"conversion: {figures['conversion_steps_per_s']:8.1f} steps/s  ({convert_s:.1f} s for {steps} steps, "
          f"{len(files)} episodes, DirectRunner, incl. pipeline start-up)")
    print(f"JPEG only : {figures['jpeg_encode_steps_per_s']:8.1f} steps/s  ({images} images, "
          f"{figures['jpeg_encode_images_per_s']:.0f} images/s)")
    print(f"ratio     : {figures['conversion_over_encode_ratio']:.3f} (conversion / encode-only)")
    target = ">= 0.5" if len(files) >= 150 else ">= 0.25"
    print(json.dumps({"figures": {
        f"conversion_over_encode_{len(files)}_episodes": {"value": round(figures["conversion_over_encode_ratio"], 3),
                                                          "target": target},
        f"conversion_steps_per_s_{len(files)}_episodes": {"value": round(figures["conversion_steps_per_s"], 1),
                                                          "target": None}}, "details": figures}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Print the simulator's speed: env steps/s with both cameras rendering vs. the no-image mode.

Usage: python tools/benchmark_sim.py [--steps 500] [--size 128] [--task pick_cube]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from vlarft.robot_io.factory import make_env


def steps_per_second(task: str, steps: int, size: int, render_images: bool) -> float:
    """Env steps per second over `steps` random-action steps (resets excluded from the timing)."""
    env = make_env(f"sim:{task}", image_size=(size, size), render_images=render_images, seed=0)
    env.reset()
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1.0, 1.0, size=(steps, 7)).astype(np.float32)
    elapsed = 0.0
    for action in actions:
        start = time.perf_counter()
        _, _, terminated, truncated, _ = env.step(action)
        elapsed += time.perf_counter() - start
        if terminated or truncated:
            env.reset()
    env.close()
    return steps / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--size", type=int, default=128, help="image height and width")
    parser.add_argument("--task", default="pick_cube")
    args = parser.parse_args()
    rendered = steps_per_second(args.task, args.steps, args.size, render_images=True)
    blind = steps_per_second(args.task, args.steps, args.size, render_images=False)
    print(f"sim:{args.task}, {args.steps} steps, 2 cameras at {args.size}x{args.size}")
    print(f"  rendering both cameras : {rendered:8.1f} steps/s  ({1000 / rendered:6.2f} ms/step)")
    print(f"  render_images=False    : {blind:8.1f} steps/s  ({1000 / blind:6.2f} ms/step)")
    print(f"  no-image / rendering   : {blind / rendered:8.2f}x")


if __name__ == "__main__":
    main()

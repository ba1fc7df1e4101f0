"""Benchmark SFT: learner steps/s of backbone + head behaviour cloning. Prints figures, asserts nothing.

    python tools/benchmark_sft.py [--config=tiny] [--batch_size=64] [--image_size=64] [--rounds=10]

One step = one `SFTLearner.step` (forward + gradient of backbone and consistency head, Adam) on
a batch of two-camera windows. Measured as the SFT loop runs it (a batch sampled on the host
from in-memory frames, put on the device, metrics fetched every step) and on a batch already on
the device (compute only), with the forward and the backbone gradient alone to say where the
time goes. XLA's cost analysis gives the work per step, and the share of the machine's matmul
limit measured in the same process makes runs on a loaded machine comparable.
"""

from __future__ import annotations

import argparse
import json
import statistics

import jax
import jax.numpy as jnp
import numpy as np

from vlarft.agents.config import get_config
from vlarft.agents.networks import tokenize
from vlarft.agents.process_settings import use_process_settings
from vlarft.agents.sft import SFTLearner, backbone_inputs, embed
from vlarft.tools.benchmark_utils import IDLE_MATMUL_GFLOPS, cost_gflop, interleaved, matmul_call, median_ratio

CAMERAS = ("front", "wrist")
STATE_DIM, ACTION_DIM = 19, 7


class FramePool:
    """Random frames held in memory and sampled as SFT window batches (as `StepData` does)."""

    def __init__(self, config, frames: int, image_size: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.images = {cam: rng.integers(0, 256, (frames, image_size, image_size, 3), dtype=np.uint8) for cam in CAMERAS}
        self.state = rng.normal(size=(frames, STATE_DIM)).astype(np.float32)
        self.action = rng.uniform(-1, 1, (frames, ACTION_DIM)).astype(np.float32)
        self.window = config.backbone.window
        self.text_ids, self.text_mask = tokenize(["pick up the red cube"], config.backbone.max_text_tokens,
                                                 config.backbone.vocab_size)

    def sample(self, rng: np.random.Generator, batch_size: int) -> dict:
        ends = rng.integers(self.window - 1, len(self.action), batch_size)
        frames = ends[:, None] + np.arange(self.window)[None] - (self.window - 1)
        return {"images": {cam: images[frames] for cam, images in self.images.items()},
                "state": self.state[frames], "timestep_mask": np.ones(frames.shape, bool),
                "text_ids": np.repeat(self.text_ids, batch_size, 0), "text_mask": np.repeat(self.text_mask, batch_size, 0),
                "action": self.action[ends]}


def measure(config_name: str, batch_size: int, image_size: int, rounds: int, per_round: int) -> dict:
    config = get_config(config_name)
    pool = FramePool(config, 2000, image_size)
    rng = np.random.default_rng(1)
    learner = SFTLearner(config, ACTION_DIM, CAMERAS, STATE_DIM)
    batch = jax.device_put(pool.sample(rng, batch_size))
    holder = {"state": learner.init(jax.random.PRNGKey(0), batch)}

    def loop_step():  # as agents/training.py runs SFT
        holder["state"], metrics = learner.step(holder["state"], pool.sample(rng, batch_size))
        return jax.device_get(metrics)

    def device_step():
        holder["state"], metrics = learner.step(holder["state"], batch)
        return metrics

    backbone = learner.backbone
    forward = jax.jit(lambda p, b: embed(backbone, p, b))
    weights = jnp.arange(config.backbone.width, dtype=jnp.float32)
    gradient = jax.jit(jax.grad(lambda p, b: jnp.sum(backbone.apply({"params": p}, *backbone_inputs(b), train=True)
                                                     * weights)))
    params = lambda: holder["state"].params["backbone"]
    gflop = cost_gflop(jax.jit(learner._update_fn), holder["state"], batch)
    matmul, matmul_gflop = matmul_call()
    s = interleaved({"matmul": matmul, "loop": loop_step, "device": device_step,
                     "forward": lambda: forward(params(), batch), "gradient": lambda: gradient(params(), batch)},
                    rounds, per_round)
    limit = matmul_gflop / statistics.median(s["matmul"])
    share = median_ratio([gflop / t for t in s["device"]], [matmul_gflop / t for t in s["matmul"]])
    idle = median_ratio([1 / t for t in s["loop"]], [matmul_gflop / t / IDLE_MATMUL_GFLOPS for t in s["matmul"]])
    return {"config": config_name, "batch_size": batch_size, "image_size": image_size,
            "steps_per_s": 1 / statistics.median(s["loop"]), "steps_per_s_device_batch": 1 / statistics.median(s["device"]),
            "steps_per_s_at_idle_limit": idle, "gflop_per_step": gflop, "matmul_limit_gflops": limit,
            "share_of_matmul_limit": share, "backbone_forward_ms": 1e3 * statistics.median(s["forward"]),
            "backbone_gradient_ms": 1e3 * statistics.median(s["gradient"])}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--per_round", type=int, default=3)
    args = parser.parse_args(argv)
    use_process_settings()  # what the stages run with
    f = measure(args.config, args.batch_size, args.image_size, args.rounds, args.per_round)
    print(f"[{f['config']}] SFT steps/s at batch {f['batch_size']}, {f['image_size']} px, two cameras: "
          f"{f['steps_per_s']:.2f} (host sampling included) | {f['steps_per_s_device_batch']:.2f} (batch on the device) | "
          f"{f['steps_per_s_at_idle_limit']:.2f} scaled to the idle machine's matmul limit ({IDLE_MATMUL_GFLOPS:.0f} GFLOP/s)")
    print(f"[{f['config']}] {f['gflop_per_step']:.2f} GFLOP/step = {f['share_of_matmul_limit']:.0%} of the matmul limit "
          f"({f['matmul_limit_gflops']:.0f} GFLOP/s now, median); backbone forward {f['backbone_forward_ms']:.1f} ms, "
          f"gradient {f['backbone_gradient_ms']:.1f} ms")
    figures = {"sft_steps_per_s_at_idle_limit": {"value": round(f["steps_per_s_at_idle_limit"], 2), "target": ">= 12"},
               "sft_steps_per_s": {"value": round(f["steps_per_s"], 2), "target": None},
               "sft_share_of_matmul_limit": {"value": round(f["share_of_matmul_limit"], 3), "target": None}}
    print(json.dumps({"figures": figures, "details": f}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Print replay sampling speed: Reverb -> JAX batches/s vs an in-process numpy ring buffer.

Both hold the same random transitions (embedding + state, optionally two RGB cameras) and sample
uniform batches that end as JAX arrays on the default device; the ratio is the figure.

Usage: python tools/benchmark_replay.py [--batch 256] [--transitions 20000] [--batches 200]
                                        [--embedding 384] [--state 19] [--image_size 64]
"""

from __future__ import annotations

import argparse
import sys
import time

from vlarft.agents.terminal import add_verbose_argument, quiet_command_line

if __name__ == "__main__":  # before TensorFlow and Reverb are imported
    quiet_command_line(sys.argv[1:])

import jax  # noqa: E402
import numpy as np  # noqa: E402

from vlarft.datasets.replay import (  # noqa: E402
    ReplayConfig, ReplayServer, TransitionWriter,
    make_batch_iterator, transition_signature)
from vlarft.datasets.schema import EpisodeSpec  # noqa: E402


def random_episode(rng, spec: EpisodeSpec, keys, length: int) -> dict:
    """RLDS step columns of `length` transitions of random data."""
    n = length + 1
    observation = {"state": rng.normal(size=(n, spec.state_dim)).astype(np.float32)}
    for key in keys:
        if key.startswith("image_"):
            h, w = spec.cameras[key[len("image_"):]]
            observation[key] = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    return {"observation": observation,
            "embedding": rng.normal(size=(n, spec.embedding_dim)).astype(np.float32),
            "action": rng.uniform(-1, 1, (n, spec.action_dim)).astype(np.float32),
            "reward": np.zeros(n, np.float32), "discount": np.ones(n, np.float32),
            "intervention": np.zeros(n, bool), "is_first": np.arange(n) == 0}


def transitions_of(steps: dict, keys) -> dict:
    """The episode as stacked transitions (what the numpy ring buffer stores)."""
    def obs(sl):
        return {k: (steps["embedding"] if k == "embedding" else steps["observation"][k])[sl] for k in keys}
    return {"observation": obs(slice(None, -1)), "next_observation": obs(slice(1, None)),
            **{name: steps[name][:-1] for name in ("action", "reward", "discount", "intervention")},
            "mc_return": np.zeros(len(steps["action"]) - 1, np.float32)}


class NumpyRingBuffer:
    """Fixed-capacity arrays per field; uniform sampling with fancy indexing."""

    def __init__(self, capacity: int, example: dict):
        self.capacity, self.size, self.cursor = capacity, 0, 0
        self.data = jax.tree_util.tree_map(lambda x: np.empty((capacity, *x.shape[1:]), x.dtype), example)

    def add(self, batch: dict) -> None:
        n = len(batch["reward"])
        index = (self.cursor + np.arange(n)) % self.capacity
        jax.tree_util.tree_map(lambda dst, src: dst.__setitem__(index, src), self.data, batch)
        self.cursor = (self.cursor + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, rng, batch_size: int) -> dict:
        index = rng.integers(0, self.size, batch_size)
        return jax.tree_util.tree_map(lambda x: x[index], self.data)


def timed(batches, count: int, warmup: int = 10) -> float:
    """Batches per second over `count` batches, each waited for on the device."""
    for _ in range(warmup):
        jax.block_until_ready(next(batches))
    start = time.perf_counter()
    for _ in range(count):
        jax.block_until_ready(next(batches))
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--transitions", type=int, default=20_000)
    parser.add_argument("--episode_length", type=int, default=100)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--embedding", type=int, default=384)
    parser.add_argument("--state", type=int, default=19)
    parser.add_argument("--image_size", type=int, default=0, help="> 0 adds two cameras of this side")
    add_verbose_argument(parser)
    args = parser.parse_args()

    cameras = {"front": (args.image_size,) * 2, "wrist": (args.image_size,) * 2}
    spec = EpisodeSpec(cameras=cameras, state_dim=args.state, embedding_dim=args.embedding)
    keys = ("embedding", "state") + (("image_front", "image_wrist") if args.image_size else ())
    config = ReplayConfig(observation_keys=keys, max_size_demo=args.transitions)
    rng = np.random.default_rng(0)
    episodes = [random_episode(rng, spec, keys, args.episode_length)
                for _ in range(max(1, args.transitions // args.episode_length))]
    ring = NumpyRingBuffer(args.transitions, transitions_of(episodes[0], keys))

    with ReplayServer.from_config(config, transition_signature(spec, keys)) as server:
        start = time.perf_counter()
        with TransitionWriter(server.client, config.demo_table) as writer:
            for steps in episodes:
                writer.write_episode(steps, keys, np.zeros(args.episode_length, np.float32))
        insert_rate = args.transitions / (time.perf_counter() - start)
        for steps in episodes:
            ring.add(transitions_of(steps, keys))
        with make_batch_iterator(server.address, {config.demo_table: args.batch}) as batches:
            reverb_rate = timed(batches, args.batches)
    numpy_rate = timed((jax.device_put(ring.sample(rng, args.batch)) for _ in iter(int, 1)), args.batches)

    row_bytes = sum(x.nbytes // x.shape[0] for x in jax.tree_util.tree_leaves(ring.data))
    print(f"{args.transitions} transitions, batch {args.batch}, keys {keys}, "
          f"{row_bytes * args.batch / 2**20:.2f} MiB/batch, device {jax.devices()[0]}")
    print(f"  insert into Reverb (TransitionWriter) : {insert_rate:9.0f} transitions/s")
    print(f"  Reverb -> JAX (BatchIterator)         : {reverb_rate:9.1f} batches/s")
    print(f"  numpy ring buffer -> JAX              : {numpy_rate:9.1f} batches/s")
    print(f"  Reverb / numpy                        : {reverb_rate / numpy_rate:9.2f}x")


if __name__ == "__main__":
    main()

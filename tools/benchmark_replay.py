"""Print replay sampling speed: Reverb -> JAX batches/s vs an in-process numpy ring buffer.

Both hold the same random transitions (embedding + state, optionally two RGB cameras) and sample
uniform batches that end as JAX arrays on the default device; the ratio is the figure.

Usage: python tools/benchmark_replay.py [--batch 256] [--transitions 20000] [--batches 200]
                                        [--rounds 5] [--embedding 384] [--state 19] [--image_size 64]

The two take turns (interleaved rounds), so a loaded machine slows both alike; the last line is
the JSON figures (`make bench`): the ratio, and with cameras Reverb's memory per byte of stored
frames (measured on a server in a child process: the growth of its RSS while the frames go in;
the speed is measured on a server in this process, as the learner runs it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import statistics
import sys
import time

from vlarft.agents.terminal import add_verbose_argument, quiet_command_line

if __name__ == "__main__":  # before TensorFlow and Reverb are imported
    quiet_command_line(sys.argv[1:])

import jax  # noqa: E402
import numpy as np  # noqa: E402

from vlarft.datasets.replay import (  # noqa: E402
    ReplayConfig, ReplayServer, TransitionWriter, connect,
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


def rss_bytes(pid: int | str = "self") -> int:
    """Resident memory of a process."""
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def serve(config: ReplayConfig, signature, ports, stop) -> None:
    """A replay server in its own process (so its memory is Reverb's alone) until `stop` is set."""
    with ReplayServer.from_config(config, signature) as server:
        ports.put(server.port)
        stop.wait()


@contextlib.contextmanager
def server_process(config: ReplayConfig, signature):
    """(address, pid) of a replay server run by a child process."""
    context = multiprocessing.get_context("spawn")
    ports, stop = context.Queue(), context.Event()
    child = context.Process(target=serve, args=(config, signature, ports, stop), daemon=True)
    child.start()
    try:
        yield f"localhost:{ports.get(timeout=120)}", child.pid
    finally:
        stop.set()
        child.join(timeout=30)


def interleaved_rates(sources: dict, rounds: int, per_round: int, warmup: int = 5) -> dict[str, list[float]]:
    """Batches/s of each source per round; the sources take turns within every round, so a change
    of the (shared) machine's load hits all of them alike. Each batch is waited for on the device."""
    for batches in sources.values():
        for _ in range(warmup):
            jax.block_until_ready(next(batches))
    rates = {name: [] for name in sources}
    for _ in range(rounds):
        for name, batches in sources.items():
            start = time.perf_counter()
            for _ in range(per_round):
                jax.block_until_ready(next(batches))
            rates[name].append(per_round / (time.perf_counter() - start))
    return rates


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--transitions", type=int, default=20_000)
    parser.add_argument("--episode_length", type=int, default=100)
    parser.add_argument("--batches", type=int, default=200, help="per source, over all rounds")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--embedding", type=int, default=384)
    parser.add_argument("--state", type=int, default=19)
    parser.add_argument("--image_size", type=int, default=0, help="> 0 adds two cameras of this side")
    add_verbose_argument(parser)
    args = parser.parse_args(argv)

    cameras = {"front": (args.image_size,) * 2, "wrist": (args.image_size,) * 2}
    spec = EpisodeSpec(cameras=cameras, state_dim=args.state, embedding_dim=args.embedding)
    keys = ("embedding", "state") + (("image_front", "image_wrist") if args.image_size else ())
    config = ReplayConfig(observation_keys=keys, max_size_demo=args.transitions)
    count = max(1, args.transitions // args.episode_length)
    episode = lambda i: random_episode(np.random.default_rng(i), spec, keys, args.episode_length)  # noqa: E731
    ring = NumpyRingBuffer(args.transitions, transitions_of(episode(0), keys))
    rng = np.random.default_rng(0)

    signature = transition_signature(spec, keys)
    with server_process(config, signature) as (address, pid):  # Reverb's own memory, alone in a process
        rss_before, frame_bytes, halfway = rss_bytes(pid), 0, None
        with TransitionWriter(connect(address), config.demo_table) as writer:
            for i in range(count):  # generated one at a time
                steps = episode(i)
                writer.write_episode(steps, keys, np.zeros(args.episode_length, np.float32))
                frame_bytes += sum(x.nbytes for x in jax.tree_util.tree_leaves(
                    (steps["embedding"], {k: v for k, v in steps["observation"].items() if k in keys})))
                if i == count // 2 - 1:
                    halfway = (rss_bytes(pid), frame_bytes)
        rss_after = rss_bytes(pid)
    reverb_bytes = rss_after - rss_before
    # The second half's growth per frame byte: the server's fixed start-up cost (gRPC buffers,
    # allocator arenas) is paid in the first half, so this is the cost of each further byte.
    marginal = ((rss_after - halfway[0]) / (frame_bytes - halfway[1])
                if halfway and frame_bytes > halfway[1] else float("nan"))
    with ReplayServer.from_config(config, signature) as server:  # in the learner's process, as in the stages
        start = time.perf_counter()
        with TransitionWriter(server.client, config.demo_table) as writer:
            for i in range(count):
                writer.write_episode(episode(i), keys, np.zeros(args.episode_length, np.float32))
        insert_rate = count * args.episode_length / (time.perf_counter() - start)
        for i in range(count):
            ring.add(transitions_of(episode(i), keys))
        table = {config.demo_table: args.batch}
        with make_batch_iterator(server.address, table, sampler_workers=config.sampler_workers) as batches, \
                make_batch_iterator(server.address, table, sampler_workers=1) as one_worker_batches:
            numpy_batches = (jax.device_put(ring.sample(rng, args.batch)) for _ in iter(int, 1))
            rates = interleaved_rates({"reverb": batches, "reverb_1_worker": one_worker_batches,
                                       "numpy": numpy_batches}, args.rounds, max(1, args.batches // args.rounds))

    reverb_rate, one_worker_rate, numpy_rate = (statistics.median(rates[n])
                                                for n in ("reverb", "reverb_1_worker", "numpy"))
    ratio = statistics.median(r / n for r, n in zip(rates["reverb"], rates["numpy"]))
    memory = reverb_bytes / frame_bytes
    row_bytes = sum(x.nbytes // x.shape[0] for x in jax.tree_util.tree_leaves(ring.data))
    print(f"{args.transitions} transitions, batch {args.batch}, keys {keys}, "
          f"{row_bytes * args.batch / 2**20:.2f} MiB/batch, device {jax.devices()[0]}")
    print(f"  insert into Reverb (TransitionWriter) : {insert_rate:9.0f} transitions/s")
    print(f"  Reverb -> JAX (BatchIterator)         : {reverb_rate:9.1f} batches/s "
          f"({1e6 / (reverb_rate * args.batch):.1f} us per item; {config.sampler_workers} sampler workers)")
    print(f"  Reverb -> JAX, 1 sampler worker       : {one_worker_rate:9.1f} batches/s "
          f"({reverb_rate / one_worker_rate:.2f}x slower than {config.sampler_workers})")
    print(f"  numpy ring buffer -> JAX              : {numpy_rate:9.1f} batches/s")
    print(f"  Reverb / numpy (median of {args.rounds} interleaved rounds): {ratio:9.2f}x")
    print(f"  Reverb memory per stored frame byte   : {memory:9.2f} "
          f"({reverb_bytes / 2**20:.0f} MiB RSS growth for {frame_bytes / 2**20:.0f} MiB of frames; "
          f"second half alone {marginal:.2f})")
    suffix = f"_{args.image_size}px" if args.image_size else ""
    figures = {f"reverb_over_numpy{suffix}": {"value": round(ratio, 3), "target": ">= 1.0"},
               f"reverb_batches_per_s{suffix}": {"value": round(reverb_rate, 1), "target": None},
               f"reverb_1_worker_batches_per_s{suffix}": {"value": round(one_worker_rate, 1), "target": None},
               f"numpy_batches_per_s{suffix}": {"value": round(numpy_rate, 1), "target": None}}
    if args.image_size:
        figures[f"reverb_memory_per_frame_byte{suffix}"] = {"value": round(memory, 3), "target": "<= 1.1"}
        figures[f"reverb_memory_per_frame_byte_second_half{suffix}"] = {"value": round(marginal, 3), "target": None}
    print(json.dumps({"figures": figures}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

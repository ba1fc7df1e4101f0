"""Benchmark the data-parallel learner: updates/s on 1 and on 2 devices. Prints figures, asserts nothing.

    python tools/benchmark_devices.py [--configs=tiny,small] [--batch_size=256] [--rounds=5]

The same learner step (`agents/learner.py`, embedding critic) on the same global batch runs on a
1-device mesh and on a 2-device mesh (`agents/sharding.py`: rows sharded, state replicated),
taking turns in every round so a change of the machine's load hits both alike. On a CPU-only
box the script splits the host into 2 XLA devices (`--xla_force_host_platform_device_count=2`,
set before JAX starts): they share the same cores, so the ratio there measures the partitioning's
overhead, not a speed-up; on a multi-GPU box the devices are real.
"""

from __future__ import annotations

import os

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):  # before JAX starts
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()

import argparse
import dataclasses
import json
import statistics

import jax
import numpy as np

from vlarft.agents.config import get_config, loss_preset
from vlarft.agents.learner import Learner
from vlarft.agents.process_settings import use_process_settings
from vlarft.agents.sharding import DataParallel
from vlarft.tools.benchmark_agent import CAMERAS, replay_like_batch
from vlarft.tools.benchmark_utils import interleaved


def learner_calls(config_name: str, batch: int, device_counts: tuple[int, ...]) -> tuple[dict, int]:
    """{"<n>_devices": a zero-argument learner step on n devices}, and the updates one step makes."""
    config = get_config(config_name)
    config = dataclasses.replace(config, critic=dataclasses.replace(config.critic, input="embedding"))
    loss = loss_preset("paper", "offline")
    learner = Learner(config, loss, 7, CAMERAS, np.zeros(19), np.ones(19), rows_per_source=(batch,))
    host_item = jax.device_get(replay_like_batch(np.random.default_rng(0), batch * loss.critic_actor_ratio,
                                                 config.backbone.width, 0, pixels=False))
    start = learner.init(jax.random.PRNGKey(0), host_item)
    calls = {}
    for count in device_counts:
        parallel = DataParallel.from_flag(str(count))
        holder = {"state": parallel.replicate(start), "item": parallel.batch(host_item)}

        def step(holder=holder):
            holder["state"], metrics = learner.step(holder["state"], holder["item"])
            return metrics

        calls[f"{count}_devices"] = step
    return calls, loss.critic_actor_ratio


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="tiny,small")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per_round", type=int, default=5)
    args = parser.parse_args(argv)
    use_process_settings()  # what the stages run with
    devices = jax.local_devices()
    counts = tuple(n for n in (1, 2) if n <= len(devices))
    print(f"{len(devices)} local {devices[0].platform} device(s); {os.cpu_count()} host cores")
    figures = {}
    for name in args.configs.split(","):
        calls, updates_per_step = learner_calls(name, args.batch_size, counts)
        seconds = interleaved(calls, args.rounds, args.per_round)
        rates = {key: updates_per_step / statistics.median(s) for key, s in seconds.items()}
        for key, rate in rates.items():
            figures[f"{name}_updates_per_s_{key}"] = {"value": rate, "target": None}
        line = " | ".join(f"{key.replace('_', ' ')} {rate:8.2f}" for key, rate in rates.items())
        if len(counts) == 2:
            ratio = statistics.median(a / b for a, b in zip(seconds["1_devices"], seconds["2_devices"]))
            figures[f"{name}_2_over_1_devices"] = {"value": ratio, "target": None}
            line += f" | 2 / 1 devices x{ratio:.2f}"
        print(f"[{name}] learner updates/s at global batch {args.batch_size}: {line}")
    print(json.dumps({"figures": figures}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

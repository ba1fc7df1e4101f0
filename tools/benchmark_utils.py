"""What the benchmarks share: timing a jitted call, the machine's matmul limit, XLA's FLOP count.

The machine is shared and its speed moves with the load, so a benchmark reports figures measured
in one process next to each other (a rate and the matmul limit measured just before it), never
an absolute time alone.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, Mapping

import jax
import jax.numpy as jnp


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Seconds per call of `fn` after one warm-up (compiling) call, its results waited for."""
    jax.block_until_ready(fn())
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / repeats


MATMUL_SIZE = 1024
MATMULS_PER_CALL = 8  # see matmul_call
IDLE_MATMUL_GFLOPS = 122.0  # the 1024x1024 jitted matmul on this 2-core box when idle (issue #11)


def matmul_call(size: int = MATMUL_SIZE, per_call: int = MATMULS_PER_CALL) -> tuple[Callable[[], object], float]:
    """(a zero-argument call of `per_call` jitted size x size float32 matmuls, its GFLOP): the
    machine's limit. Several per call, so that a timing of a few calls lasts tens of
    milliseconds: timed in rounds between learner updates, 5 single 1024² matmuls per round
    gave 348-386 GFLOP/s where 30 gave 413-445 on the same box (the cores' threads waking up
    after the update count for more in a short timing)."""
    a = jnp.ones((size, size), jnp.float32)
    matmul = jax.jit(lambda x: x @ x)

    def call():
        for _ in range(per_call):
            out = matmul(a)
        return out

    return call, per_call * 2 * size ** 3 / 1e9


def interleaved(calls: Mapping[str, Callable[[], object]], rounds: int, per_round: int) -> dict[str, list[float]]:
    """Seconds per call of each zero-argument function, one figure per round; the functions take
    turns within every round, so a change of the machine's load hits all of them alike."""
    for call in calls.values():
        jax.block_until_ready(call())  # compile
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            for _ in range(per_round):
                out = call()
            jax.block_until_ready(out)
            seconds[name].append((time.perf_counter() - start) / per_round)
    return seconds


def median_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median over rounds of numerator / denominator (e.g. a rate over the matmul limit)."""
    return statistics.median(n / d for n, d in zip(numerator, denominator))


def cost_gflop(jitted, *args) -> float:
    """GFLOP of one call of a `jax.jit` function on these arguments (XLA's cost analysis)."""
    analysis = jitted.lower(*args).compile().cost_analysis()
    if isinstance(analysis, list):  # one entry per computation in older jax versions
        analysis = analysis[0]
    return float(analysis["flops"]) / 1e9

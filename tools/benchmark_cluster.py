"""Benchmark: conversion on a Dask cluster of separate processes, peak worker memory vs dataset size.

    python tools/benchmark_cluster.py [--episodes=1000] [--small=100] [--workers=2] [--image_size=128]

Records `--episodes` simulator demos (or reads `--input`), then converts the first `--small` of
them and all of them, each on a fresh `dask scheduler` + `--workers` x `dask worker` cluster
(`tools/dask_cluster.py`), and prints each worker's peak resident memory (Linux `VmHWM`) and the
job's steps/s (and the driver's peak: this process, which also reads the episode lengths). Bounded memory = the peak does not grow with the number of episodes: the figure
tracked is peak(all) / peak(small).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def convert_on_cluster(files: list[Path], out: Path, workers: int, partition_size: int = 0) -> dict:
    from vlarft.pipelines.convert_demos import convert
    from vlarft.tools.dask_cluster import peak_rss_mb, process_cluster

    with process_cluster(workers=workers) as cluster:
        idle = max(cluster.worker_peak_rss_mb())
        start = time.perf_counter()
        result = convert([str(f) for f in files], str(out), "bench", log=lambda m: None,
                         pipeline_args=cluster.runner_args() + (
                             [f"--dask_partition_size={partition_size}"] if partition_size else []))
        seconds = time.perf_counter() - start
        peak = max(cluster.worker_peak_rss_mb())
    return {"episodes": sum(result.episodes.values()), "seconds": seconds, "worker_peak_rss_mb": peak,
            "worker_idle_rss_mb": idle, "driver_peak_rss_mb_so_far": peak_rss_mb()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--image_size", type=int, default=128)
    parser.add_argument("--input", default="", help="existing raw episode dir (skips recording)")
    parser.add_argument("--partition_size", type=int, default=0,
                        help="inputs per Dask bag partition (--dask_partition_size; 0: the runner's default, 128)")
    args = parser.parse_args(argv)

    from vlarft.datasets.raw_episodes import list_raw_episodes, read_raw_episode
    from vlarft.tools.record_demos import record

    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(args.input) if args.input else Path(tmp) / "raw"
        if not args.input:
            record("sim:pick_cube", "scripted", args.episodes, str(raw), image_size=args.image_size, progress=False)
        files = list_raw_episodes(raw)[:args.episodes]
        steps = {n: sum(len(read_raw_episode(f)[0]["steps"]["action"]) for f in files[:n])
                 for n in (args.small, len(files))}
        runs = {n: convert_on_cluster(files[:n], Path(tmp) / f"data_{n}", args.workers, args.partition_size)
                for n in steps}
    for n, run in runs.items():
        print(f"{n:5d} episodes ({steps[n]} steps) on {args.workers} dask workers: {steps[n] / run['seconds']:7.1f} "
              f"steps/s, worker peak RSS {run['worker_peak_rss_mb']:.0f} MB (idle {run['worker_idle_rss_mb']:.0f} MB); "
              f"driver peak so far {run['driver_peak_rss_mb_so_far']:.0f} MB")
    small, large = runs[args.small], runs[len(files)]
    growth = large["worker_peak_rss_mb"] / small["worker_peak_rss_mb"]
    print(f"peak worker memory, {len(files)} / {args.small} episodes: x{growth:.2f}")
    print(json.dumps({"figures": {
        f"dask_worker_peak_rss_mb_{len(files)}_episodes": {"value": round(large["worker_peak_rss_mb"]), "target": None},
        f"dask_worker_peak_rss_{len(files)}_over_{args.small}_episodes": {"value": round(growth, 3), "target": "<= 1.5"},
        f"dask_conversion_steps_per_s_{len(files)}_episodes": {"value": round(steps[len(files)] / large["seconds"], 1),
                                                                "target": None}},
        "details": {str(n): {**run, "steps": steps[n]} for n, run in runs.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

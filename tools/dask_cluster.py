"""A `dask.distributed` cluster started the way a user starts one: `dask scheduler` and `dask worker`
as separate processes (the CLIs of this virtual environment), on loopback.

    with process_cluster(workers=2) as cluster:
        ... --runner=apache_beam.runners.dask.dask_runner.DaskRunner --dask_client_address=<cluster.address>

On a real cluster the same two commands run on the machines (see WORKSPACE.md, *Scale-out*).
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"


@dataclasses.dataclass
class ProcessCluster:
    address: str  # tcp://HOST:PORT of the scheduler
    scheduler: subprocess.Popen
    workers: list[subprocess.Popen]

    def runner_args(self) -> list[str]:
        """The Beam pipeline options that run a job on this cluster."""
        return [f"--runner={DASK_RUNNER}", f"--dask_client_address={self.address}"]

    def worker_pids(self) -> list[int]:
        return [w.pid for w in self.workers]

    def worker_peak_rss_mb(self) -> list[float]:
        """Per `dask worker` command: the largest peak resident memory (Linux `VmHWM`, MB) of its
        processes (the nanny and the worker process it starts)."""
        return [max(peak_rss_mb(p) for p in process_tree(pid)) for pid in self.worker_pids()]


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (Linux /proc)."""
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    return [pid] + [p for child in children for p in process_tree(child)]


def peak_rss_mb(pid: int | str = "self") -> float:
    """Peak resident memory of a process (Linux /proc/<pid>/status `VmHWM`), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise OSError(f"/proc/{pid}/status has no VmHWM line")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def dask_cli() -> str:
    return str(Path(sys.executable).with_name("dask"))


@contextlib.contextmanager
def process_cluster(workers: int = 2, threads: int = 1, memory_limit: str = "0", log_dir: str | None = None,
                    start_timeout_s: float = 120.0) -> Iterator[ProcessCluster]:
    """A scheduler and `workers` single-process workers on 127.0.0.1 (their logs in `log_dir`,
    else discarded); stopped on exit."""
    from dask.distributed import Client

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"

    def start(name: str, args: list[str]) -> subprocess.Popen:
        log = open(Path(log_dir) / f"{name}.log", "w") if log_dir else subprocess.DEVNULL
        return subprocess.Popen([dask_cli(), *args], stdout=log, stderr=log)

    scheduler = start("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"])
    started: list[subprocess.Popen] = []
    try:
        for i in range(workers):
            started.append(start(f"worker_{i}", ["worker", address, "--nworkers", "1", "--nthreads", str(threads),
                                                 "--memory-limit", memory_limit, "--no-dashboard",
                                                 "--host", "127.0.0.1"]))
        deadline = time.monotonic() + start_timeout_s
        with Client(address, timeout=start_timeout_s) as client:
            client.wait_for_workers(workers, timeout=max(1.0, deadline - time.monotonic()))
        yield ProcessCluster(address, scheduler, started)
    finally:
        for process in [*started, scheduler]:
            process.terminate()
        for process in [*started, scheduler]:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()

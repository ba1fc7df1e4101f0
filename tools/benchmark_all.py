"""Runs every speed benchmark and prints one table of its figures against their targets.

    python tools/benchmark_all.py [--only=sft,learner,...] [--out=FILE.json] [--quick]
    make bench

Each benchmark runs alone in its own process, one after the other (they measure a shared
machine, so nothing else should run meanwhile); each prints, as its last line, one JSON object
of figures `{name: {"value": v, "target": ">= x" | "<= x" | null}}` (optionally under a
"figures" key). A figure with a target is marked met or missed. The whole set takes over an
hour on a 2-core CPU box, most of it the `small` pixel critic's ~20 s updates (`--quick`:
smaller sizes, a few minutes, figures not comparable with the targets).
"""

from __future__ import annotations

import argparse
import json
import operator
import os
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from vlarft.agents.xla_flags import use_default_xla_flags

TOOLS = Path(__file__).resolve().parent

# name -> (script arguments, the same with --quick)
BENCHMARKS: dict[str, tuple[list[str], list[str]]] = {
    "sft": (["benchmark_sft.py"], ["benchmark_sft.py", "--rounds=2"]),
    "learner": (["benchmark_agent.py", "--parts=learner"], ["benchmark_agent.py", "--parts=learner", "--configs=tiny"]),
    "devices": (["benchmark_devices.py"], ["benchmark_devices.py", "--configs=tiny", "--rounds=2"]),
    "latency": (["benchmark_agent.py", "--parts=latency", "--configs=small", "--cores=1"],
                ["benchmark_agent.py", "--parts=latency", "--configs=tiny", "--cores=1"]),
    "online": (["benchmark_online.py"], ["benchmark_online.py", "--steps=12", "--rounds=1"]),
    "control_pauses": (["benchmark_control_pauses.py"],
                       ["benchmark_control_pauses.py", "--config=tiny", "--rounds=1", "--updates=5"]),
    "replay": (["benchmark_replay.py"], ["benchmark_replay.py", "--transitions=2000", "--batches=20"]),
    "replay_128px": (["benchmark_replay.py", "--image_size=128"],
                     ["benchmark_replay.py", "--image_size=128", "--transitions=2000", "--batches=20"]),
    "conversion_150": (["benchmark_conversion.py", "--episodes=150"], ["benchmark_conversion.py", "--episodes=5"]),
    "conversion_20": (["benchmark_conversion.py", "--episodes=20"], ["benchmark_conversion.py", "--episodes=3"]),
    "cluster": (["benchmark_cluster.py"], ["benchmark_cluster.py", "--episodes=20", "--small=5"]),
    "streaming": (["benchmark_streaming.py"], ["benchmark_streaming.py", "--steps=3000", "--sft_steps=12"]),
}

COMPARISONS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


def met(value: float, target: str | None) -> bool | None:
    """Whether `value` meets a target like ">= 0.5" (None: no target)."""
    if not target:
        return None
    symbol, bound = target.split()
    return COMPARISONS[symbol](value, float(bound))


def figures_of(stdout: str) -> dict[str, dict]:
    """The {name: {"value", "target"}} figures of a benchmark's last JSON line."""
    lines = [line for line in stdout.strip().splitlines() if line.startswith("{")]
    if not lines:
        raise ValueError("no JSON line in the benchmark's output")
    data = json.loads(lines[-1])
    data = data.get("figures", data)
    return {name: f for name, f in data.items() if isinstance(f, dict) and "value" in f}


def run(name: str, arguments: list[str], console: Console) -> tuple[dict[str, dict], float, str]:
    start = time.perf_counter()
    command = [sys.executable, str(TOOLS / arguments[0]), *arguments[1:]]
    with console.status(f"[bold]{name}[/]: {' '.join(arguments)}"):
        out = subprocess.run(command, capture_output=True, text=True,
                             env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")})
    seconds = time.perf_counter() - start
    if out.returncode:
        return {}, seconds, f"exit {out.returncode}: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else ''}"
    try:
        return figures_of(out.stdout), seconds, ""
    except ValueError as e:
        return {}, seconds, str(e)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    parser.add_argument("--out", default="", help="also write every figure to this JSON file")
    parser.add_argument("--quick", action="store_true", help="small sizes: checks the benchmarks run, not the targets")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}")

    use_default_xla_flags()  # the benchmarks inherit it (each also adds it when run alone)
    xla_flags = os.environ.get("XLA_FLAGS", "")
    console = Console()
    results, failures = {}, {}
    for index, name in enumerate(names, 1):
        arguments = BENCHMARKS[name][1 if args.quick else 0]
        figures, seconds, error = run(name, arguments, console)
        console.print(f"[{index}/{len(names)}] {name}: {len(figures)} figures in {seconds:.0f} s"
                      + (f" [red]failed: {error}[/]" if error else ""))
        results[name] = figures
        if error:
            failures[name] = error

    table = Table(title="Speed figures vs targets" + (" (--quick: not comparable)" if args.quick else ""),
                  caption=f"XLA_FLAGS={xla_flags}")
    for column in ("benchmark", "figure", "value", "target", "met"):
        table.add_column(column)
    for name, figures in results.items():
        for figure, f in figures.items():
            ok = met(f["value"], f.get("target"))
            mark = "" if ok is None else ("[green]yes[/]" if ok else "[red]no[/]")
            table.add_row(name, figure, f"{f['value']:g}", f.get("target") or "", mark)
    console.print(table)
    if args.out:
        Path(args.out).write_text(json.dumps({"results": results, "failures": failures, "xla_flags": xla_flags}, indent=1))
    print(json.dumps({"results": results, "failures": failures, "xla_flags": xla_flags}))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

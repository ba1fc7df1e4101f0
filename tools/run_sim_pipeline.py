"""The main job on the embedded default: simulator + scripted operator + DirectRunner.

    python tools/run_sim_pipeline.py --workdir=runs/sim [--episodes=20] [--tasks=pick_cube,insert_peg]

For every task it records demonstrations with the scripted operator, converts them with the
Beam job into an RLDS dataset, and prints a summary table. Later stages (SFT, Cal-ConRFT,
HIL-ConRFT) extend this job. Extra arguments are passed to Beam as pipeline options. The last
line of standard output is a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Sequence

from rich.console import Console
from rich.table import Table

from vlarft.pipelines.convert_demos import convert
from vlarft.tools.record_demos import record

TOP_UP_SEED_OFFSET = 10_000  # a resumed recording uses seeds the interrupted one did not


def run(workdir: str, tasks: Sequence[str], episodes: int, image_size: int, seed: int,
        beam_args: Sequence[str], console: Console) -> list[dict]:
    rows = []
    for task in tasks:
        demo_dir = Path(workdir) / "demos" / task
        existing = len(list(demo_dir.glob("*.npz"))) if demo_dir.exists() else 0
        recorded = {"success_rate": float("nan"), "mean_length": float("nan")}
        if existing < episodes:
            console.print(f"[bold]{task}[/]: recording {episodes - existing} demo(s) with the scripted operator")
            summary = record(f"sim:{task}", "scripted", episodes - existing, str(demo_dir),
                             seed=seed + (TOP_UP_SEED_OFFSET + existing if existing else 0), image_size=image_size)
            recorded = summary.as_dict()
        else:
            console.print(f"[bold]{task}[/]: {existing} demo(s) already in {demo_dir}, not re-recording")
        console.print(f"[bold]{task}[/]: converting to RLDS")
        result = convert([str(demo_dir)], str(Path(workdir) / "data"), f"sim_{task}",
                         log=lambda msg: console.print(f"  {msg}"), pipeline_args=beam_args)
        rows.append({"task": task, "demos": sum(result.episodes.values()),
                     "operator_success_rate": recorded["success_rate"],
                     "mean_demo_length": recorded["mean_length"], "episodes": result.episodes,
                     "dead_letters": len(result.dead_letters), "dataset_dir": result.dataset_dir,
                     "convert_s": round(result.wall_s, 1)})
    return rows


def print_table(rows: list[dict], console: Console) -> None:
    table = Table(title="Simulated demonstrations -> RLDS")
    for column in ("task", "demos", "operator success", "mean demo length", "train/val", "dataset"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["task"], str(r["demos"]), f"{r['operator_success_rate']:.0%}",
                      f"{r['mean_demo_length']:.1f}",
                      f"{r['episodes'].get('train', 0)}/{r['episodes'].get('validation', 0)}",
                      os.path.relpath(r["dataset_dir"]))
    console.print(table)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="runs/sim", help="where demos, datasets and runs go")
    parser.add_argument("--tasks", default="pick_cube,insert_peg", help="comma-separated simulator tasks")
    parser.add_argument("--episodes", type=int, default=20, help="demonstrations per task")
    parser.add_argument("--image_size", type=int, default=128, help="camera image size")
    parser.add_argument("--seed", type=int, default=0, help="first reset seed")
    args, beam_args = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    console = Console(stderr=True)
    rows = run(args.workdir, [t for t in args.tasks.split(",") if t], args.episodes, args.image_size,
               args.seed, beam_args, console)
    print_table(rows, console)
    print(json.dumps({"tasks": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The main job on the embedded default: simulator + scripted operator + DirectRunner + in-process Reverb.

    python tools/run_sim_pipeline.py --workdir=runs/sim [--episodes=20] [--tasks=pick_cube,insert_peg] [--full]

For every task: record demonstrations with the scripted operator -> convert them to RLDS (Beam)
-> SFT of backbone + consistency head -> cache backbone embeddings (Beam) -> offline Cal-ConRFT
on Reverb -> online HIL-ConRFT (actor + learner over in-process Reverb, the scripted intervener
taking over when the policy strays) -> evaluate every stage's policy on the simulator. It prints
a table like the paper's Table I: success rate and mean episode length of SFT, Cal-ConRFT and
HIL-ConRFT per task, with the online wall-clock minutes and the intervention rate.

The stages are `tools/sim_stages.py` (`PipelineSettings` documents the CPU default: 64x64 camera
images, the `tiny` model, batch 64, and what it changes in the paper's online loss); `--full` uses
the paper-scale settings (128x128 images, `small` = Octo-small widths, batch 256, 20000 online env
steps, the paper's losses): meant for a GPU. `--set/--offline_set/--online_set SECTION.FIELD=VALUE`
override agent settings. `--backbone_from=DIR` starts SFT from an imported Octo checkpoint
(`tools/import_octo.py`; with `--full` the paper-scale run on Octo-small, WORKSPACE.md "Octo
backbone"). Every stage is resumable: re-running skips finished stages and resumes
training runs. Extra arguments are passed to Beam as pipeline options. The last stdout line is a
JSON summary.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Sequence

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from vlarft.agents.terminal import add_verbose_argument, quiet_command_line  # noqa: E402

if __name__ == "__main__":  # before TensorFlow, Reverb and Beam are imported
    quiet_command_line(sys.argv[1:])

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from vlarft.agents.compilation_cache import enable_compilation_cache  # noqa: E402
from vlarft.agents.process_settings import use_process_settings  # noqa: E402
from vlarft.tools.sim_stages import TaskPipeline, add_settings_arguments, jsonable, settings_from_args  # noqa: E402

STAGES = (("sft", "SFT"), ("cal_conrft", "Cal-ConRFT"), ("hil_conrft", "HIL-ConRFT"))


def print_table(rows: list[dict], workdir: Path, console: Console) -> None:
    """The paper's Table I for the simulated tasks: success rate and mean episode length per stage."""
    table = Table(title="ConRFT on the simulator (success rate / mean episode length, deterministic policy)")
    for column in ("task", "demos", "demo length", *(name for _, name in STAGES), "online min", "interventions",
                   "videos"):
        table.add_column(column)
    fmt = lambda r: f"{r['success_rate']:.0%} / {r['mean_episode_length']:.1f}"
    for r in rows:
        online = r["hil_conrft"]
        table.add_row(r["task"], str(r["demos"]), f"{r['mean_demo_length']:.1f}", *(fmt(r[key]) for key, _ in STAGES),
                      f"{online['online_minutes']:.1f}", f"{online['intervention_rate']:.0%} of steps",
                      os.path.relpath(os.path.dirname(online.get("video") or str(workdir)), workdir))
    if rows:
        mean = lambda key, field: sum(r[key][field] for r in rows) / len(rows)
        table.add_row("average", "", "", *(f"{mean(key, 'success_rate'):.0%} / {mean(key, 'mean_episode_length'):.1f}"
                                          for key, _ in STAGES), f"{mean('hil_conrft', 'online_minutes'):.1f}", "", "")
    wide = Console(file=console.file, width=max(console.width, 140))  # a log file is not a narrow terminal
    wide.print(table)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="runs/sim", help="where demos, datasets, runs and videos go")
    parser.add_argument("--tasks", default="pick_cube,insert_peg", help="comma-separated simulator tasks")
    add_settings_arguments(parser)
    add_verbose_argument(parser)
    args, beam_args = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    settings = settings_from_args(args)
    use_process_settings()
    enable_compilation_cache()
    console = Console(stderr=True)
    console.print(f"main job settings: {settings}")
    workdir = Path(args.workdir)
    rows = []
    for task in [t for t in args.tasks.split(",") if t]:
        stages = TaskPipeline(task, workdir / task, settings, beam_args, log=console.print,
                              verbose=args.verbose).all_stages()
        demos = stages.pop("demos")
        rows.append({"task": task, "demos": demos["demos"], "mean_demo_length": demos["mean_demo_length"],
                     "dataset_dir": demos["dataset_dir"], **stages})
    print_table(rows, workdir, console)
    print(json.dumps(jsonable({"settings": dataclasses.asdict(settings), "tasks": rows})))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The ConRFT benchmark: simulated Table I over seeds, with 95% intervals.

    python tools/benchmark_conrft.py --results=results/conrft [--tasks=pick_cube,insert_peg,hang_ring]
        [--seeds=0,1,2] [--eval_episodes=50] [--online_env_steps=20000] [--jobs=2]
        [--offline_name=NAME --offline_set SECTION.FIELD=VALUE ...] [--online_name=NAME --online_set ...]

For every task and seed (`tools/sim_stages.py`, resumable): record demos with the scripted
operator (seeded) -> convert -> SFT -> embed -> Cal-ConRFT -> HIL-ConRFT with the scripted
intervener; every stage's final policy is evaluated on `--eval_episodes` deterministic episodes
with the same fixed evaluation seeds. It prints Table I as mean +- 95% interval over seeds
(Student t; success rate, mean episode length, online env steps and robot minutes at 10 Hz,
intervention rate), writes `table.md`, `summary.json`, `settings.json` (with the git revision)
and one PNG per task of success rate vs online env steps (HIL-ConRFT's periodic evaluations,
mean and per seed, with SFT and Cal-ConRFT as reference lines) to `--results`. Variants share
earlier stages: `--offline_name`/`--online_name` name the variant folders their overrides go to.
`--jobs=N` runs N (task, seed) pipelines as parallel processes. The last stdout line is a JSON
summary.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from scipy import stats  # noqa: E402

from vlarft.tools.sim_stages import (PipelineSettings, TaskPipeline, add_settings_arguments, jsonable,  # noqa: E402
                                     settings_from_args)

STAGES = (("sft", "SFT"), ("cal_conrft", "Cal-ConRFT"), ("hil_conrft", "HIL-ConRFT"))
ROBOT_HZ = 10.0
BENCHMARK_DEFAULTS = PipelineSettings(eval_episodes=50, online_env_steps=20000, online_eval_every=2000,
                                      online_eval_episodes=10)


def interval(values: Sequence[float]) -> tuple[float, float]:
    """(mean, half-width of the 95% Student-t interval over the values; 0 for one value)."""
    values = np.asarray([v for v in values if v is not None and math.isfinite(v)], float)
    if len(values) == 0:
        return float("nan"), float("nan")
    if len(values) == 1:
        return float(values[0]), 0.0
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return float(values.mean()), float(half)


def summarize(task_runs: dict[str, list[dict]]) -> dict:
    """Per task: every stage's success rate and mean episode length as (mean, half-width) over
    seeds, the online budget and interventions, and the per-seed figures."""
    summary = {}
    for task, runs in task_runs.items():
        row = {"seeds": len(runs)}
        for key, _ in STAGES:
            if key not in runs[0]:
                continue
            row[key] = {field: interval([r[key][field] for r in runs])
                        for field in ("success_rate", "mean_episode_length")}
            row[key]["per_seed"] = [r[key]["success_rate"] for r in runs]
        online = [r["hil_conrft"] for r in runs if "hil_conrft" in r]
        if not online:
            summary[task] = row
            continue
        row["online_env_steps"] = interval([o["env_steps"] for o in online])
        row["robot_minutes"] = interval([o["env_steps"] / ROBOT_HZ / 60 for o in online])
        row["wall_minutes"] = interval([o["online_minutes"] for o in online])
        row["intervention_rate"] = interval([o["intervention_rate"] for o in online])
        row["updates_per_env_step"] = interval([o.get("updates_per_env_step") for o in online])
        summary[task] = row
    return summary


def render_table(summary: dict, console: Console, title: str) -> str:
    """Prints Table I; returns it as Markdown."""
    pct = lambda m: "-" if m is None else f"{100 * m[0]:.0f} ± {100 * m[1]:.0f}%"
    num = lambda m, digits=1: "-" if m is None else f"{m[0]:.{digits}f} ± {m[1]:.{digits}f}"
    stage = lambda row, key, field: row[key][field] if key in row else None
    columns = ["task", "seeds", *(f"{name} success" for _, name in STAGES), *(f"{name} length" for _, name in STAGES),
               "online env steps", "robot min (10 Hz)", "interventions (share of steps)", "critic updates / env step"]
    rows = []
    for task, row in summary.items():
        rows.append([task, str(row["seeds"]), *(pct(stage(row, key, "success_rate")) for key, _ in STAGES),
                     *(num(stage(row, key, "mean_episode_length")) for key, _ in STAGES),
                     num(row.get("online_env_steps"), 0), num(row.get("robot_minutes")),
                     pct(row.get("intervention_rate")), num(row.get("updates_per_env_step"), 2)])
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    Console(file=console.file, width=max(console.width, 200)).print(table)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def plot_curves(task: str, runs: list[dict], summary_row: dict, path: Path) -> str:
    """Success rate vs online env steps: HIL-ConRFT's periodic evaluations per seed and their
    mean, with the SFT and Cal-ConRFT final success as reference lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    curves = []
    for seed, run in zip(summary_row["seed_list"], runs):
        points = run.get("hil_conrft", {}).get("evaluations") or []
        if points:
            x = [p["env_steps"] for p in points]
            y = [p["success_rate"] for p in points]
            ax.plot(x, y, color="tab:blue", alpha=0.35, linewidth=1, marker=".", label=f"HIL-ConRFT seed {seed}")
            curves.append((x, y))
    if curves:  # the k-th evaluations of the seeds (taken at the first episode end once due) averaged
        k = min(len(x) for x, _ in curves)
        ax.plot([np.mean([x[i] for x, _ in curves]) for i in range(k)],
                [np.mean([y[i] for _, y in curves]) for i in range(k)], color="tab:blue", linewidth=2.5,
                marker="o", label="HIL-ConRFT (mean over seeds)")
    for (key, name), color in zip(STAGES[:2], ("tab:gray", "tab:orange")):
        if key not in summary_row:
            continue
        mean, half = summary_row[key]["success_rate"]
        ax.axhline(mean, color=color, linestyle="--", label=f"{name} final ({100 * mean:.0f} ± {100 * half:.0f}%)")
    ax.set_xlabel("online env steps")
    ax.set_ylabel("success rate (deterministic policy)")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title(f"{task}: success vs online env steps")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)


def git_revision() -> dict:
    repo = Path(__file__).resolve().parents[1]
    run = lambda *cmd: subprocess.run(cmd, cwd=repo, capture_output=True, text=True).stdout.strip()
    return {"commit": run("git", "rev-parse", "HEAD"), "dirty": bool(run("git", "status", "--porcelain"))}


def run_one(task: str, seed: int, args, settings: PipelineSettings, beam_args, console: Console) -> dict:
    root = Path(args.results) / "runs" / task / f"seed{seed}"
    pipeline = TaskPipeline(task, root, dataclasses.replace(settings, seed=seed), beam_args,
                            log=lambda m: console.print(f"[seed {seed}] {m}"), show_progress=args.jobs <= 1)
    results = {"demos": pipeline.demos(), "sft": pipeline.sft()}
    if args.until in ("offline", "online"):
        results["cal_conrft"] = pipeline.offline(args.offline_name)
    if args.until == "online":
        results["hil_conrft"] = pipeline.online(args.offline_name, args.online_name)
    return results


def run_in_subprocess(task: str, seed: int, argv: Sequence[str], results: Path) -> int:
    """One (task, seed) pipeline as its own process (`--only`), logging to its run folder."""
    log_path = results / "runs" / task / f"seed{seed}" / "log.txt"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as log:
        cmd = [sys.executable, __file__, *argv, f"--only={task}:{seed}", "--jobs=1"]
        return subprocess.run(cmd, stdout=log, stderr=log).returncode


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default="results/conrft", help="results folder")
    parser.add_argument("--tasks", default="pick_cube,insert_peg", help="comma-separated simulator tasks")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--offline_name", default="default", help="folder name of the offline variant")
    parser.add_argument("--online_name", default="default", help="folder name of the online variant")
    parser.add_argument("--until", choices=("sft", "offline", "online"), default="online",
                        help="last stage to run (the table shows the stages run)")
    parser.add_argument("--jobs", type=int, default=1, help="(task, seed) pipelines run in parallel processes")
    parser.add_argument("--only", default="", help=argparse.SUPPRESS)  # TASK:SEED, for --jobs workers
    add_settings_arguments(parser, BENCHMARK_DEFAULTS)
    args, beam_args = parser.parse_known_args(argv)
    settings = settings_from_args(args, BENCHMARK_DEFAULTS)
    console = Console(stderr=True)
    tasks = [t for t in args.tasks.split(",") if t]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    results = Path(args.results)
    if args.only:
        task, seed = args.only.split(":")
        run_one(task, int(seed), args, settings, beam_args, console)
        return 0
    start = time.time()
    results.mkdir(parents=True, exist_ok=True)
    console.print(f"ConRFT benchmark: tasks {tasks}, seeds {seeds}, settings {settings}")
    pairs = [(task, seed) for task in tasks for seed in seeds]
    if args.jobs > 1:
        worker_argv = [a for a in argv if not a.startswith("--jobs")]
        with ThreadPoolExecutor(args.jobs) as pool:
            codes = list(pool.map(lambda p: run_in_subprocess(*p, worker_argv, results), pairs))
        failed = [p for p, code in zip(pairs, codes) if code != 0]
        if failed:
            console.print(f"[red]failed runs (see their log.txt): {failed}[/]")
            return 1
    task_runs = {task: [run_one(task, seed, args, settings, beam_args, console) for seed in seeds] for task in tasks}
    summary = summarize(task_runs)
    title = (f"ConRFT on the simulator: mean ± 95% interval over {len(seeds)} seed(s), "
             f"{settings.eval_episodes} evaluation episodes per policy (offline '{args.offline_name}', "
             f"online '{args.online_name}')")
    markdown = render_table(summary, console, title)
    name = f"{args.offline_name}__{args.online_name}"
    (results / f"table_{name}.md").write_text(f"{title}\n\n{markdown}")
    plots = {}
    for task, runs in task_runs.items():
        summary[task]["seed_list"] = seeds
        plots[task] = plot_curves(task, runs, summary[task], results / f"success_vs_env_steps_{task}_{name}.png")
    record = {"settings": dataclasses.asdict(settings), "tasks": tasks, "seeds": seeds,
              "offline_name": args.offline_name, "online_name": args.online_name, "revision": git_revision(),
              "wall_minutes": (time.time() - start) / 60}
    (results / f"settings_{name}.json").write_text(json.dumps(jsonable(record), indent=1))
    out = {**record, "summary": summary, "plots": plots}
    (results / f"summary_{name}.json").write_text(json.dumps(jsonable(out), indent=1))
    print(json.dumps(jsonable(out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

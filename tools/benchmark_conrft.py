"""The ConRFT benchmark: simulated Table I over seeds, with 95% intervals.

    python tools/benchmark_conrft.py --results=results/conrft [--tasks=pick_cube,insert_peg,hang_ring]
        [--seeds=0,1,2] [--eval_episodes=50] [--online_env_steps=20000] [--jobs=2]
        [--offline_name=NAME --offline_set SECTION.FIELD=VALUE ...] [--online_name=NAME --online_set ...]
        [--methods=sft,cal_conrft,hil_conrft,hg_dagger,rlpd_embedding,rlpd_pixels]

For every task and seed (`tools/sim_stages.py`, resumable): record demos with the scripted
operator (seeded) -> convert -> SFT -> embed -> Cal-ConRFT -> HIL-ConRFT with the scripted
intervener; every stage's final policy is evaluated on `--eval_episodes` deterministic episodes
with the same fixed evaluation seeds. It prints Table I as mean +- 95% interval over seeds
(Student t; success rate, mean episode length, online env steps and robot minutes at 10 Hz,
intervention rate), writes `table.md`, `summary.json`, `settings.json` (with the git revision)
and one PNG per task of success rate vs online env steps (HIL-ConRFT's periodic evaluations,
mean and per seed, with SFT and Cal-ConRFT as reference lines) to `--results`. Variants share
earlier stages: `--offline_name`/`--online_name` name the variant folders their overrides go to.
`--methods` adds the other online methods of the agent registry (HG-DAgger, RLPD with the VLA
embedding or with pixel encoders), each from the same SFT run, demos, intervener, env-step
budget and evaluation seeds: a second table (one row per task and method: success, episode
length, interventions per episode in the first and last quarter of the run, learner wall-clock)
and every method's curve in the task's PNG.
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

from vlarft.agents.compilation_cache import enable_compilation_cache  # noqa: E402
from vlarft.agents.process_settings import use_process_settings  # noqa: E402
from vlarft.tools.sim_stages import (PipelineSettings, TaskPipeline, add_settings_arguments, jsonable,  # noqa: E402
                                     settings_from_args)

STAGES = (("sft", "SFT"), ("cal_conrft", "Cal-ConRFT"), ("hil_conrft", "HIL-ConRFT"))
# --methods: every row of the comparison table; the online ones also have a curve per task.
METHODS = {"sft": "SFT only", "cal_conrft": "Cal-ConRFT only", "hil_conrft": "HIL-ConRFT", "hg_dagger": "HG-DAgger",
           "rlpd_embedding": "RLPD (VLA embedding)", "rlpd_pixels": "RLPD (pixel encoders)"}
# The other online methods: (registered agent, config overrides), run from the SFT workdir.
# RLPD with pixel encoders pays PIXEL_UTD critic updates per env step: a pixel update costs about
# 10x an embedding one on this CPU (tools/benchmark_agent.py), and the lockstep actor waits for the
# learner, so at UTD 1 its run would take ~10x the others' wall-clock; at 0.25 it took 60-80 min per
# run against 3-9 min. At 0.05 it still took 26-53 min (WORKSPACE.md, issue #14): the same env
# steps as the others, about 4x their wall-clock (in RLPD's favour); the table states the UTD.
PIXEL_UTD = 0.05
BASELINES = {"hg_dagger": ("hg_dagger", ()), "rlpd_embedding": ("rlpd", ("critic.input=embedding",)),
             "rlpd_pixels": ("rlpd", ("critic.input=pixels", f"online.updates_per_env_step={PIXEL_UTD}"))}
ONLINE_METHODS = ("hil_conrft", *BASELINES)
STAGES_KEYS = tuple(key for key, _ in STAGES)
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


def print_table(columns: list[str], rows: list[list[str]], console: Console, title: str) -> str:
    """Prints a table; returns it as Markdown."""
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    Console(file=console.file, width=max(console.width, 200)).print(table)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def intervention_quarters(workdir: Path) -> list[float]:
    """Interventions (human takeovers) per online episode in each quarter of the run, in order."""
    path = workdir / "online_episodes.jsonl"
    episodes = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    if not episodes:
        return []
    return [float(np.mean([e["intervention_segments"] for e in part])) for part in np.array_split(episodes, 4)
            if len(part)]


def summarize_methods(task_runs: dict[str, list[dict]], methods: Sequence[str]) -> dict:
    """Per task and method: (mean, half-width) over seeds of the final success rate, mean episode
    length, learner wall-clock minutes and, online, env steps, interventions per episode (first
    and last quarter of the run) and intervention share."""
    summary = {}
    for task, runs in task_runs.items():
        summary[task] = {}
        for method in methods:
            results = [r[method] for r in runs if method in r]
            if not results:
                continue
            row = {field: interval([r[field] for r in results]) for field in ("success_rate", "mean_episode_length")}
            row["wall_minutes"] = interval([r.get("online_minutes", r.get("stage_wall_s", float("nan")) / 60)
                                            for r in results])
            if method in ONLINE_METHODS:
                row["env_steps"] = interval([r["env_steps"] for r in results])
                row["intervention_rate"] = interval([r["intervention_rate"] for r in results])
                quarters = [r.get("intervention_quarters") or [float("nan")] for r in results]
                row["interventions_first"] = interval([q[0] for q in quarters])
                row["interventions_last"] = interval([q[-1] for q in quarters])
                row["updates_per_env_step"] = interval([r.get("updates_per_env_step") for r in results])
            row["per_seed"] = [r["success_rate"] for r in results]
            summary[task][method] = row
    return summary


def render_methods_table(summary: dict, console: Console, title: str) -> str:
    """Prints the methods comparison (one row per task and method); returns it as Markdown."""
    pct = lambda m: "-" if m is None else f"{100 * m[0]:.0f} ± {100 * m[1]:.0f}%"
    num = lambda m, digits=1: "-" if m is None else f"{m[0]:.{digits}f} ± {m[1]:.{digits}f}"
    columns = ["task", "method", "seeds", "success", "episode length", "online env steps",
               "interventions / episode (first → last quarter)", "intervention share", "updates / env step",
               "learner wall-clock min"]
    rows = []
    for task, methods in summary.items():
        for method, row in methods.items():
            first, last = row.get("interventions_first"), row.get("interventions_last")
            rows.append([task, METHODS[method], str(len(row["per_seed"])), pct(row["success_rate"]),
                         num(row["mean_episode_length"]), num(row.get("env_steps"), 0),
                         "-" if first is None else f"{num(first, 2)} → {num(last, 2)}",
                         pct(row.get("intervention_rate")),
                         num(row.get("updates_per_env_step"), 2), num(row["wall_minutes"])])
    return print_table(columns, rows, console, title)


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
    return print_table(columns, rows, console, title)


COLORS = {"hil_conrft": "tab:blue", "hg_dagger": "tab:green", "rlpd_embedding": "tab:red",
          "rlpd_pixels": "tab:purple", "sft": "tab:gray", "cal_conrft": "tab:orange"}


def plot_curves(task: str, runs: list[dict], summary_row: dict, path: Path,
                methods: Sequence[str] = STAGES_KEYS) -> str:
    """Two panels over online env steps: every online method's success rate (periodic
    evaluations per seed and their mean, with the SFT and Cal-ConRFT final success as reference
    lines), and its human interventions per episode (quarters of the run, mean over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax_help) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    for method in (m for m in methods if m in ONLINE_METHODS):
        curves, color = [], COLORS[method]
        for seed, run in zip(summary_row["seed_list"], runs):
            points = run.get(method, {}).get("evaluations") or []
            if points:
                x = [p["env_steps"] for p in points]
                y = [p["success_rate"] for p in points]
                ax.plot(x, y, color=color, alpha=0.3, linewidth=1, marker=".")
                curves.append((x, y))
        if curves:  # the k-th evaluations of the seeds (taken at the first episode end once due) averaged
            k = min(len(x) for x, _ in curves)
            ax.plot([np.mean([x[i] for x, _ in curves]) for i in range(k)],
                    [np.mean([y[i] for _, y in curves]) for i in range(k)], color=color, linewidth=2.5,
                    marker="o", label=f"{METHODS[method]} (mean of {len(curves)} seeds; thin: per seed)")
        quarters = [(run[method]["env_steps"], run[method].get("intervention_quarters") or []) for run in runs
                    if method in run]
        quarters = [(steps, q) for steps, q in quarters if len(q) == 4]
        if quarters:
            steps = np.mean([s for s, _ in quarters])
            ax_help.plot([steps * (i + 0.5) / 4 for i in range(4)], np.mean([q for _, q in quarters], axis=0),
                         color=color, linewidth=2, marker="o", label=METHODS[method])
    for key in ("sft", "cal_conrft"):
        if key not in summary_row or key not in methods:
            continue
        mean, half = summary_row[key]["success_rate"]
        ax.axhline(mean, color=COLORS[key], linestyle="--",
                   label=f"{METHODS[key]} final ({100 * mean:.0f} ± {100 * half:.0f}%)")
    ax.set_xlabel("online env steps")
    ax.set_ylabel("success rate (deterministic policy)")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title(f"{task}: success vs online env steps")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    ax_help.set_xlabel("online env steps (quarters of the run)")
    ax_help.set_ylabel("human interventions per episode")
    ax_help.set_ylim(bottom=0)
    ax_help.set_title("interventions over time (mean of seeds)")
    ax_help.grid(alpha=0.3)
    if ax_help.lines:
        ax_help.legend(fontsize=7)
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
    methods = args.methods.split(",")
    results = {"demos": pipeline.demos(), "sft": pipeline.sft()}
    conrft = [m for m in ("cal_conrft", "hil_conrft") if m in methods]
    if conrft and args.until in ("offline", "online"):
        results["cal_conrft"] = pipeline.offline(args.offline_name)
    if "hil_conrft" in methods and args.until == "online":
        results["hil_conrft"] = dict(pipeline.online(args.offline_name, args.online_name), intervention_quarters=(
            intervention_quarters(root / "online" / args.offline_name / args.online_name)))
    for method in (m for m in methods if m in BASELINES and args.until == "online"):
        agent, overrides = BASELINES[method]
        results[method] = dict(pipeline.baseline(agent, method, overrides),
                               intervention_quarters=intervention_quarters(root / "online_agents" / method))
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
    parser.add_argument("--methods", default="sft,cal_conrft,hil_conrft",
                        help=f"comma-separated rows of the comparison table: {', '.join(METHODS)}")
    parser.add_argument("--until", choices=("sft", "offline", "online"), default="online",
                        help="last stage to run (the table shows the stages run)")
    parser.add_argument("--jobs", type=int, default=1, help="(task, seed) pipelines run in parallel processes")
    parser.add_argument("--only", default="", help=argparse.SUPPRESS)  # TASK:SEED, for --jobs workers
    add_settings_arguments(parser, BENCHMARK_DEFAULTS)
    args, beam_args = parser.parse_known_args(argv)
    settings = settings_from_args(args, BENCHMARK_DEFAULTS)
    use_process_settings()
    enable_compilation_cache()  # every seed after the first loads the stages' programs
    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"--methods: unknown {', '.join(unknown)}; known: {', '.join(METHODS)}")
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
    compared = summarize_methods(task_runs, methods)
    methods_title = (f"Online methods on the simulator: mean ± 95% interval over {len(seeds)} seed(s), "
                     f"{settings.eval_episodes} evaluation episodes per policy, {settings.online_env_steps} env steps")
    markdown += f"\n{methods_title}\n\n" + render_methods_table(compared, console, methods_title)
    name = f"{args.offline_name}__{args.online_name}"
    (results / f"table_{name}.md").write_text(f"{title}\n\n{markdown}")
    plots = {}
    for task, runs in task_runs.items():
        summary[task]["seed_list"] = seeds
        plots[task] = plot_curves(task, runs, {**summary[task], **compared[task]},
                                  results / f"success_vs_env_steps_{task}_{name}.png", methods)
    record = {"settings": dataclasses.asdict(settings), "tasks": tasks, "seeds": seeds, "methods": methods,
              "offline_name": args.offline_name, "online_name": args.online_name, "revision": git_revision(),
              "wall_minutes": (time.time() - start) / 60}
    (results / f"settings_{name}.json").write_text(json.dumps(jsonable(record), indent=1))
    out = {**record, "summary": summary, "methods_summary": compared, "plots": plots}
    (results / f"summary_{name}.json").write_text(json.dumps(jsonable(out), indent=1))
    print(json.dumps(jsonable(out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

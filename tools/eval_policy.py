"""Evaluate an exported policy: success rate, episode lengths, videos and charts.

    python tools/eval_policy.py --policy=runs/sft --episodes=20
    python tools/eval_policy.py --policy=runs/offline --env=sim:pick_cube --stochastic --sampler_steps=4 \\
        --all_videos --report

Loads `<policy>/policy/` (any stage's export) and runs `--episodes` episodes with the policy alone
(episode i resets with seed `--seed` + i). Default env: the export's task on the simulator, at the
image size the policy was trained with. Writes to `--out` (default `<policy>/eval/`):
`episode_000.mp4` (the first episode; every episode with `--all_videos`; in `--video_dir` if
given), `episode_lengths.png` (one bar per episode, green = success), `eval.json`, and with
`--report` the training-curve PNGs of the run (`agents/plots.py: training_report`).
Prints a summary table; the last line of standard output is one JSON object: success_rate,
mean_episode_length, mean_success_length (null without successes), episodes, intervention_rate,
lengths, successes, seeds and the files written.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Sequence

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import gymnasium as gym

from vlarft.agents.compilation_cache import enable_compilation_cache
from vlarft.agents.evaluation import evaluate, step_label
from vlarft.agents.process_settings import use_process_settings
from vlarft.agents.video import FrameLabel, video_frame, write_video
from vlarft.robot_io.contract import INFO_INTERVENTION, require_cameras


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", required=True, help="workdir holding policy/ (or the export directory)")
    parser.add_argument("--env", default="", help="environment (default: sim:<export's task>)")
    parser.add_argument("--episodes", type=int, default=20, help="evaluation episodes")
    parser.add_argument("--seed", type=int, default=10_000, help="reset seed of the first episode")
    parser.add_argument("--stochastic", action="store_true", help="sample fresh noise (default: deterministic)")
    parser.add_argument("--sampler_steps", type=int, default=1, help="consistency sampler steps (1 = one-step)")
    parser.add_argument("--video_dir", default="", help="where MP4s go (default: --out)")
    parser.add_argument("--all_videos", action="store_true", help="an MP4 of every episode, not just the first")
    parser.add_argument("--out", default="", help="output directory (default: <policy>/eval)")
    parser.add_argument("--report", action="store_true", help="also draw the run's training curves")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.episodes < 1 or args.sampler_steps < 1:
        parser.error("--episodes and --sampler_steps must be at least 1")
    return args


class EpisodeRecorder(gym.Wrapper):
    """Records the first `record` episodes as `<video_dir>/episode_NNN.mp4` (all cameras side by
    side) and counts steps a human took over (`info["intervention"]`)."""

    def __init__(self, env: gym.Env, video_dir: str, record: int):
        super().__init__(env)
        self.video_dir, self.record = video_dir, record
        self.index, self.frames, self.videos = -1, [], []
        self.steps = self.interventions = 0

    def reset(self, **kwargs):
        observation, info = self.env.reset(**kwargs)
        self.index += 1
        self.frames = [video_frame(observation, FrameLabel(step=0))] if self.index < self.record else []
        self.episode_steps = 0
        return observation, info

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        self.interventions += bool(info.get(INFO_INTERVENTION, False))
        self.episode_steps += 1
        if self.frames:
            self.frames.append(video_frame(observation, step_label(self.episode_steps, reward, info)))
            if terminated or truncated:
                path = os.path.join(self.video_dir, f"episode_{self.index:03d}.mp4")
                self.videos.append(write_video(self.frames, path))
                self.frames = []
        return observation, reward, terminated, truncated, info

    @property
    def intervention_rate(self) -> float:
        return self.interventions / self.steps if self.steps else 0.0


def policy_workdir(policy: str) -> Path:
    """The run directory of `--policy` (which may name the export directory itself)."""
    path = Path(policy)
    return path.parent if (path / "policy.json").exists() else path


def make_policy_env(meta: dict, env_name: str = "") -> gym.Env:
    """The evaluation env: `env_name` or `sim:<task>`; a simulator renders at the training image size."""
    from vlarft.robot_io.factory import make_env

    if not env_name:
        if not meta.get("task"):
            raise ValueError("the export names no task; pass --env=<backend>:<task>")
        env_name = f"sim:{meta['task']}"
    sizes = {tuple(hw) for hw in meta["spec"]["cameras"].values()}
    if env_name.startswith("sim:") and len(sizes) > 1:
        raise ValueError(f"the policy's cameras have different sizes {sorted(sizes)}; the simulator renders one size")
    env = make_env(env_name, **({"image_size": sizes.pop()} if env_name.startswith("sim:") else {}))
    return require_cameras(env, meta["spec"]["cameras"], env_name)


def summarize(result, recorder: EpisodeRecorder, seed: int) -> dict:
    """The JSON summary of one evaluation (NaN becomes null)."""
    summary = {**result.as_dict(), "intervention_rate": recorder.intervention_rate, "lengths": result.lengths,
               "successes": result.success_flags, "seeds": [seed + i for i in range(result.episodes)],
               "control_pauses": result.control_pauses}
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in summary.items()}


def print_table(summary: dict, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    successes = sum(summary["successes"])
    table.add_row("success rate", f"{summary['success_rate']:.2f} ({successes}/{summary['episodes']})")
    table.add_row("mean episode length", f"{summary['mean_episode_length']:.1f}")
    mean_success = summary["mean_success_length"]
    table.add_row("mean success length", "—" if mean_success is None else f"{mean_success:.1f}")
    table.add_row("intervention rate", f"{summary['intervention_rate']:.2f}")
    table.add_row("lengths", " ".join(f"{n}{'✓' if ok else '✗'}" for n, ok in zip(summary["lengths"], summary["successes"])))
    Console(file=sys.stdout).print(table)


def training_curves(workdir: Path, out: Path) -> list[str]:
    """The run's training-report PNGs; a warning (not an error) when the run logged nothing."""
    from vlarft.agents import plots

    online = plots.online_report(workdir, out)  # an online run's episode and evaluation records
    try:
        return plots.training_report(workdir, out) + online
    except FileNotFoundError as e:
        if not online:
            print(f"warning: no training report: {e}", file=sys.stderr)
        return online


def run(args: argparse.Namespace) -> dict:
    """Evaluates, writes videos and charts; returns the JSON summary."""
    from rich.console import Console
    from rich.progress import Progress

    from vlarft.agents import plots
    from vlarft.agents.export import load_policy_export
    from vlarft.agents.registry import export_policy

    start = time.time()
    export = load_policy_export(args.policy)
    workdir = policy_workdir(args.policy)
    out = Path(args.out or workdir / "eval")
    env_name = args.env or f"sim:{export.meta.get('task', '')}"
    recorder = EpisodeRecorder(make_policy_env(export.meta, args.env), args.video_dir or str(out),
                               record=args.episodes if args.all_videos else 1)
    policy = export_policy(export, deterministic=not args.stochastic, steps=args.sampler_steps, seed=args.seed)
    with Progress(console=Console(stderr=True), disable=args.no_progress, transient=True) as bar:
        task = bar.add_task("episodes", total=args.episodes)
        result = evaluate(policy, lambda: recorder, args.episodes, seed=args.seed,
                          progress=lambda done: bar.update(task, completed=done))
    summary = summarize(result, recorder, args.seed)
    title = f"{workdir.name} on {env_name} ({'stochastic' if args.stochastic else 'deterministic'})"
    chart = plots.plot_episode_lengths(result.lengths, result.success_flags, out / "episode_lengths.png", title)
    report = training_curves(workdir, out) if args.report else []
    summary |= {"video": recorder.videos[0] if recorder.videos else "", "videos": recorder.videos, "chart": chart,
                "report": report, "policy": str(workdir.resolve()), "env": env_name,
                "stage": export.meta.get("stage", ""), "agent": export.meta.get("agent", "conrft"),
                "learner_step": export.meta.get("learner_step"),
                "deterministic": not args.stochastic, "sampler_steps": args.sampler_steps,
                "wall_s": round(time.time() - start, 2)}
    (out / "eval.json").write_text(json.dumps(summary, indent=1))
    print_table(summary, title)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    use_process_settings()
    enable_compilation_cache()
    try:
        summary = run(args)
    except (OSError, ValueError) as e:  # no export, no event files, unwritable --out, unknown env, camera mismatch
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

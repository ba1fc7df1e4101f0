"""The main job on the embedded default: simulator + scripted operator + DirectRunner + in-process Reverb.

    python tools/run_sim_pipeline.py --workdir=runs/sim [--episodes=20] [--tasks=pick_cube,insert_peg] [--full]

For every task: record demonstrations with the scripted operator -> convert them to RLDS (Beam)
-> SFT of backbone + consistency head -> cache backbone embeddings (Beam) -> offline Cal-ConRFT
on Reverb -> online HIL-ConRFT (actor + learner over in-process Reverb, the scripted intervener
taking over when the policy strays) -> evaluate every stage's policy on the simulator. It prints
a table like the paper's Table I: success rate and mean episode length of SFT, Cal-ConRFT and
HIL-ConRFT per task, with the online wall-clock minutes and the intervention rate.

CPU default (what is shrunk): 64x64 camera images, the `tiny` model, 1500 SFT and 1500 offline
learner steps at batch 64, 2000 online env steps, 20 evaluation episodes per stage, and two
online-loss changes (measured on pick_cube, see WORKSPACE.md): eta = 0.1 instead of the paper's
1.0 (with this few learner updates per env step on a CPU the tiny critic is not accurate enough
for eta = 1: the policy collapses), and the BC term only on demonstrations and interventions
(`online_own_rows_bc = 0`; the paper's BC on the whole batch makes the actor imitate its own
exploration), with an online learning rate of 1e-4 instead of 3e-4 (steadier curves). `--full` uses the paper-scale settings (128x128 images, `small` = Octo-small
widths, batch 256, 20000 online env steps, the paper's online loss): meant for a GPU.
Every step is resumable: re-running skips finished recordings and resumes training runs.
Extra arguments are passed to Beam as pipeline options. The last stdout line is a JSON summary.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from pathlib import Path
from typing import Sequence

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

TOP_UP_SEED_OFFSET = 10_000  # a resumed recording uses seeds the interrupted one did not


@dataclasses.dataclass(frozen=True)
class JobSettings:
    """Sizes of the main job (CPU default; `full()` for the paper-scale run)."""

    episodes: int = 20
    image_size: int = 64
    config: str = "tiny"
    batch_size: int = 64
    sft_steps: int = 1500
    offline_steps: int = 1500
    eval_episodes: int = 20
    online_env_steps: int = 2000
    online_beta: float = 0.5
    online_eta: float = 0.1
    online_own_rows_bc: float = 0.0
    online_learning_rate: float = 1e-4
    online_eval_every: int = 500
    online_eval_episodes: int = 5
    seed: int = 0

    @classmethod
    def full(cls, **overrides) -> "JobSettings":
        return cls(**{**dict(episodes=30, image_size=128, config="small", batch_size=256, sft_steps=20000,
                             offline_steps=20000, eval_episodes=20, online_env_steps=20000, online_eta=1.0,
                             online_own_rows_bc=1.0, online_learning_rate=3e-4,
                             online_eval_every=2000, online_eval_episodes=10), **overrides})


def record_and_convert(task: str, workdir: Path, settings: JobSettings, beam_args, console) -> dict:
    from vlarft.pipelines.convert_demos import convert
    from vlarft.tools.record_demos import record

    demo_dir = workdir / "demos" / task
    existing = len(list(demo_dir.glob("*.npz"))) if demo_dir.exists() else 0
    recorded = {"success_rate": float("nan"), "mean_length": float("nan")}
    if existing < settings.episodes:
        console.print(f"[bold]{task}[/]: recording {settings.episodes - existing} demo(s) with the scripted operator")
        recorded = record(f"sim:{task}", "scripted", settings.episodes - existing, str(demo_dir),
                          seed=settings.seed + (TOP_UP_SEED_OFFSET + existing if existing else 0),
                          image_size=settings.image_size).as_dict()
    console.print(f"[bold]{task}[/]: converting demos to RLDS")
    result = convert([str(demo_dir)], str(workdir / "data"), f"sim_{task}", log=lambda m: console.print(f"  {m}"),
                     overwrite=True, pipeline_args=beam_args)  # the demos may have been topped up
    return {"dataset_dir": result.dataset_dir, "demos": sum(result.episodes.values()),
            "operator_success_rate": recorded["success_rate"], "mean_demo_length": recorded["mean_length"]}


def train_stages(task: str, dataset_dir: str, workdir: Path, settings: JobSettings, beam_args, console) -> dict:
    from vlarft.agents import training
    from vlarft.agents.config import get_config, loss_preset
    from vlarft.agents.online import run_online
    from vlarft.pipelines.embed_dataset import embed_dataset

    base = get_config(settings.config)
    config = dataclasses.replace(base, train=dataclasses.replace(
        base.train, batch_size=settings.batch_size, eval_every=0, checkpoint_every=500, seed=settings.seed))
    runs = workdir / "runs" / task
    options = lambda dataset, stage, steps: training.StageOptions(
        dataset_dir=dataset, workdir=str(runs / stage), steps=steps, eval_episodes=settings.eval_episodes)
    console.print(f"[bold]{task}[/]: SFT of backbone + consistency head ({settings.sft_steps} steps)")
    sft = training.run_sft(options(dataset_dir, "sft", settings.sft_steps), config)
    console.print(f"[bold]{task}[/]: caching backbone embeddings")
    embedded = embed_dataset(dataset_dir, str(runs / "sft"), str(workdir / "data"), log=lambda m: console.print(f"  {m}"),
                             overwrite=True, pipeline_args=beam_args)
    console.print(f"[bold]{task}[/]: offline Cal-ConRFT ({settings.offline_steps} steps)")
    offline = training.run_offline(options(embedded.dataset_dir, "offline", settings.offline_steps), config,
                                   loss_preset("paper", "offline"))
    console.print(f"[bold]{task}[/]: online HIL-ConRFT with scripted interventions ({settings.online_env_steps} "
                  f"env steps)")
    online_config = dataclasses.replace(
        config, train=dataclasses.replace(config.train, learning_rate=settings.online_learning_rate),
        online=dataclasses.replace(config.online, env_steps=settings.online_env_steps, teleop="scripted_intervention",
                                   eval_every=settings.online_eval_every, eval_episodes=settings.online_eval_episodes))
    online = run_online(dataclasses.replace(options("", "online", 0), init_from=str(runs / "offline")), online_config,
                        dataclasses.replace(loss_preset("paper", "online"), bc_weight=settings.online_beta,
                                            q_weight=settings.online_eta,
                                            online_bc_weight=settings.online_own_rows_bc))
    return {"sft": sft, "cal_conrft": offline, "hil_conrft": online}


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


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="runs/sim", help="where demos, datasets, runs and videos go")
    parser.add_argument("--tasks", default="pick_cube,insert_peg", help="comma-separated simulator tasks")
    parser.add_argument("--full", action="store_true", help="paper-scale settings (for a GPU)")
    for field in dataclasses.fields(JobSettings):
        parser.add_argument(f"--{field.name}", type=type(field.default), default=None,
                            help=f"override (CPU default {field.default})")
    args, beam_args = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(JobSettings) if getattr(args, f.name) is not None}
    settings = JobSettings.full(**overrides) if args.full else JobSettings(**overrides)
    console = Console(stderr=True)
    console.print(f"main job settings: {settings}")
    workdir = Path(args.workdir)
    rows = []
    for task in [t for t in args.tasks.split(",") if t]:
        row = {"task": task, **record_and_convert(task, workdir, settings, beam_args, console)}
        row.update(train_stages(task, row["dataset_dir"], workdir, settings, beam_args, console))
        rows.append(row)
    print_table(rows, workdir, console)
    print(json.dumps(_jsonable({"settings": dataclasses.asdict(settings), "tasks": rows})))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Record teleoperated demonstrations as raw episode files (one atomic .npz per episode).

    python tools/record_demos.py --env=sim:pick_cube --teleop=scripted --episodes=20 --out_dir=demos/pick_cube
    python tools/record_demos.py --env=sim:insert_peg --teleop=spacemouse --episodes=20 --out_dir=...

The device drives the robot through the same intervention wrapper the online stage uses (the
"policy" here holds still), so every step records who acted. Successful episodes are kept;
`--keep_failures` keeps failed ones too (flagged `success=False` in their metadata). Device
buttons: SUCCESS / FAILURE end the episode with that outcome, END_EPISODE ends it as a time-limit
end, RERECORD throws the episode away and starts again, PAUSE holds the robot (on a Franka, the task
TOML's `[teleop.<device>]` table configures the device, e.g. which SpaceMouse button is SUCCESS).
Ctrl-C stops cleanly: every finished episode is already on disk; only the one in progress is lost.
The last line of standard output is a JSON summary.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import time
import uuid
from pathlib import Path
from collections.abc import Iterator, Sequence

import numpy as np

from vlarft.datasets.episode_builder import EpisodeBuilder
from vlarft.datasets.raw_episodes import next_episode_path, write_raw_episode
from vlarft.datasets.schema import EpisodeSpec
from vlarft.robot_io.contract import INFO_INTERVENTION, state_slice
from vlarft.robot_io.factory import make_env
from vlarft.robot_io.intervention import InterventionWrapper, operator_outcome
from vlarft.robot_io.teleop import make_device_for

INTERRUPTED = "interrupted: finished episodes are saved; the one in progress was discarded"
REALTIME = {"auto": None, "on": True, "off": False}  # --realtime -> the `realtime` argument


@dataclasses.dataclass
class RecordingSummary:
    kept: int = 0
    attempts: int = 0
    successes: int = 0
    discarded: int = 0
    lengths: list[int] = dataclasses.field(default_factory=list)
    files: list[str] = dataclasses.field(default_factory=list)

    def as_dict(self) -> dict:
        finished = self.attempts - self.discarded
        return {
            "kept": self.kept, "attempts": self.attempts, "successes": self.successes,
            "success_rate": self.successes / finished if finished else 0.0,
            "mean_length": float(np.mean(self.lengths)) if self.lengths else 0.0,
            "rerecorded": self.discarded,
        }


@dataclasses.dataclass
class EpisodeOutcome:
    episode: dict | None  # None when the operator asked to re-record
    success: bool
    length: int


def record_episode(env: InterventionWrapper, builder: EpisodeBuilder, seed: int,
                   realtime_hz: float = 0.0) -> EpisodeOutcome:
    """Runs one episode with the device in control; the policy action is 'hold still' (no
    motion, gripper kept where it is), so releasing the device freezes the robot."""
    spec = env.unwrapped.robot_spec
    obs, info = env.reset(seed=seed)
    hold = np.zeros(spec.action_dim, np.float32)
    hold[-1] = 1.0 - 2.0 * float(obs["state"][state_slice("gripper")][0])  # opening 1 -> -1 (open)
    builder.start(obs)
    while True:
        tick = time.monotonic()
        obs, reward, terminated, truncated, info = env.step(hold)
        outcome = operator_outcome(reward, terminated, truncated, info)
        if outcome.rerecord:
            return EpisodeOutcome(None, False, builder.num_transitions)
        hold[-1] = info["executed_action"][-1]
        builder.add(info["executed_action"], outcome.reward, obs, terminated=outcome.terminated,
                    intervention=info.get(INFO_INTERVENTION, False))
        if outcome.terminated or outcome.truncated:
            return EpisodeOutcome(builder.finish(success=outcome.success), outcome.success, builder.num_transitions)
        if realtime_hz:
            time.sleep(max(0.0, 1.0 / realtime_hz - (time.monotonic() - tick)))


def open_device_env(env_name: str, teleop: str, seed: int, image_size: int, out_dir: Path):
    """Creates `out_dir`, then opens the env (a simulator at `image_size`) and its teleop device:
    `(env, device)`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    base_env = make_env(env_name, image_size=image_size) if env_name.startswith("sim:") else make_env(env_name)
    return base_env, make_device_for(teleop, base_env, seed)


@contextlib.contextmanager
def recording_session(env, episodes: int, desc: str, progress: bool) -> Iterator:
    """A progress bar over `episodes` episodes; on leaving, closes the bar, then `env`."""
    from tqdm import tqdm

    bar = tqdm(total=episodes, desc=desc, unit="ep", disable=not progress, file=sys.stderr)
    try:
        yield bar
    finally:
        bar.close()
        env.close()


def record(env_name: str, teleop: str, episodes: int, out_dir: str, *, seed: int = 0,
           keep_failures: bool = False, operator: str = "", image_size: int = 128,
           max_attempts: int = 0, realtime: bool | None = None, progress: bool = True,
           lossless_frames: bool = False) -> RecordingSummary:
    """Records until `episodes` episodes are kept (or `max_attempts` are used up). Frames are
    stored as the dataset's JPEG bytes unless `lossless_frames` (`datasets/raw_episodes.py`)."""
    out = Path(out_dir)
    base_env, device = open_device_env(env_name, teleop, seed, image_size, out)
    env = InterventionWrapper(base_env, device)
    spec = base_env.unwrapped.robot_spec
    episode_spec = EpisodeSpec.from_robot_spec(spec)
    realtime_hz = spec.control_hz if (realtime if realtime is not None else teleop != "scripted") else 0.0
    summary = RecordingSummary()
    max_attempts = max_attempts or 3 * episodes
    with recording_session(env, episodes, f"recording {spec.task}", progress) as bar:
        while summary.kept < episodes and summary.attempts < max_attempts:
            path = next_episode_path(out, spec.task)
            builder = EpisodeBuilder(episode_spec, episode_id=f"{spec.task}-{uuid.uuid4().hex[:12]}",
                                     task=spec.task, instruction=spec.instruction, source="demo",
                                     robot=spec.robot, operator=operator or teleop, file_path=str(path))
            outcome = record_episode(env, builder, seed=seed + summary.attempts, realtime_hz=realtime_hz)
            summary.attempts += 1
            if outcome.episode is None:
                summary.discarded += 1
                continue
            summary.successes += outcome.success
            summary.lengths.append(outcome.length)
            if outcome.success or keep_failures:
                write_raw_episode(path, outcome.episode, episode_spec, jpeg_frames=not lossless_frames)
                summary.kept += 1
                summary.files.append(str(path))
                bar.update(1)
            stats = summary.as_dict()
            bar.set_postfix(success=f"{stats['success_rate']:.0%}", mean_len=f"{stats['mean_length']:.0f}")
    return summary


def add_device_flags(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds the flags every device-driven recording tool shares: --env, --teleop, --seed,
    --operator, --image_size, --realtime (map it with `REALTIME`) and --no_progress."""
    parser.add_argument("--env", default="sim:pick_cube", help="environment, e.g. sim:pick_cube, sim:insert_peg")
    parser.add_argument("--teleop", default="scripted", help="scripted | spacemouse | keyboard | gamepad")
    parser.add_argument("--seed", type=int, default=0, help="first reset seed (and scripted operator seed)")
    parser.add_argument("--operator", default="", help="operator name stored with each episode")
    parser.add_argument("--image_size", type=int, default=128, help="camera image size (simulator)")
    parser.add_argument("--realtime", choices=("auto", "on", "off"), default="auto",
                        help="pace steps at the control rate (auto: on for human devices)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_device_flags(parser)
    parser.add_argument("--episodes", type=int, default=20, help="episodes to keep")
    parser.add_argument("--out_dir", required=True, help="directory for the raw episode files")
    parser.add_argument("--keep_failures", action="store_true", help="also keep failed episodes (flagged)")
    parser.add_argument("--max_attempts", type=int, default=0, help="give up after this many (0 = 3x episodes)")
    parser.add_argument("--lossless_frames", action="store_true",
                        help="store camera frames as raw pixels instead of the dataset's JPEG bytes")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    summary = RecordingSummary()
    try:
        summary = record(args.env, args.teleop, args.episodes, args.out_dir, seed=args.seed,
                         keep_failures=args.keep_failures, operator=args.operator,
                         image_size=args.image_size, max_attempts=args.max_attempts,
                         realtime=REALTIME[args.realtime], progress=not args.no_progress,
                         lossless_frames=args.lossless_frames)
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    stats = summary.as_dict()
    print(f"kept {stats['kept']} episode(s) in {args.out_dir}: success rate {stats['success_rate']:.0%} "
          f"over {summary.attempts - summary.discarded} attempt(s), mean length {stats['mean_length']:.1f} steps",
          file=sys.stderr)
    print(json.dumps({**stats, "out_dir": args.out_dir}))
    return 0 if summary.kept == args.episodes else 2


if __name__ == "__main__":
    sys.exit(main())

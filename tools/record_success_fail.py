"""Record camera frames labelled success / failure, for training a reward classifier.

    python tools/record_success_fail.py --env=sim:pick_cube --teleop=scripted --labeler=sim --episodes=30 \\
        --success_hold=10 --out_dir=frames/pick_cube
    python tools/record_success_fail.py --env=sim:pick_cube --teleop=spacemouse --labeler=key --episodes=20 \\
        --out_dir=frames/pick_cube

A device drives the robot as in `tools/record_demos.py` (same buttons: SUCCESS / FAILURE /
END_EPISODE end the episode, RERECORD discards it, PAUSE holds the robot), and every frame is
labelled:
  * `--labeler=key`: a success while the operator HOLDS the label key (`--label_key`, default
    space, or left shift when the keyboard device drives since its space toggles the gripper) in a
    pygame window: the keyboard device's own window, else a small window that turns green while
    the key is held (it needs the focus);
  * `--labeler=sim`: the simulator's own `info["success"]` (unattended, with the scripted operator).
`--success_hold=N` keeps recording N more frames, robot held still, after a successful episode
(extra success frames: a success is often a single frame). All frames are kept, whatever the
episode's outcome: failed attempts are good failure frames.

One file per episode, `<task>_<n>.npz`, written atomically in the raw episode format
(`datasets/raw_episodes.py`) with frame columns only:
  steps/observation/image_<camera>  uint8 [T, H, W, 3]     steps/observation/state  float32 [T, 19]
  steps/success_label  bool [T] (the label)                 steps/env_success  bool [T] (env's own)
  steps/held           bool [T] (recorded by --success_hold after the episode ended)
and `episode_metadata` with `"kind": "success_fail_frames"`. Read one with `read_labelled_frames`.
The last line of standard output is a JSON summary.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from vlarft.datasets.episode_builder import EpisodeBuilder, utc_now_iso
from vlarft.datasets.raw_episodes import RawEpisodeError, next_episode_path, read_raw_episode, write_raw_episode
from vlarft.datasets.schema import EpisodeSpec
from vlarft.robot_io.contract import INFO_SUCCESS
from vlarft.robot_io.intervention import InterventionWrapper
from vlarft.robot_io.teleop import DeviceNotAvailableError
from vlarft.tools.record_demos import (INTERRUPTED, REALTIME, add_device_flags, open_device_env, record_episode,
                                       recording_session)

KIND = "success_fail_frames"
LabelFn = Callable[[Mapping[str, Any], Mapping[str, Any]], bool]  # (observation, info) -> success?


# ---------------------------------------------------------------- the file format


@dataclasses.dataclass
class LabelledFrames:
    """One recorded episode's frames: `observation` columns [T, ...], labels [T] and metadata."""

    observation: dict[str, np.ndarray]
    success_label: np.ndarray
    env_success: np.ndarray
    held: np.ndarray
    metadata: dict
    spec: EpisodeSpec

    def __len__(self) -> int:
        return len(self.success_label)


def write_labelled_frames(path: str | Path, frames: LabelledFrames) -> Path:
    """Writes `frames` atomically to `path` (refuses to overwrite). Frames stay lossless: the
    classifier trained on them judges live camera frames."""
    steps = {"observation": frames.observation, "success_label": frames.success_label,
             "env_success": frames.env_success, "held": frames.held}
    return write_raw_episode(path, {"steps": steps, "episode_metadata": frames.metadata}, frames.spec,
                             jpeg_frames=False)


def read_labelled_frames(path: str | Path) -> LabelledFrames:
    """Reads a file of `write_labelled_frames`; RawEpisodeError (a ValueError) names the file."""
    episode, spec = read_raw_episode(path)
    steps, metadata = episode["steps"], episode["episode_metadata"]
    if metadata.get("kind") != KIND or "success_label" not in steps:
        raise RawEpisodeError(path, f"not a success/failure frame file (kind {metadata.get('kind')!r}); "
                                    f"record one with tools/record_success_fail.py")
    frames = LabelledFrames(observation=dict(steps.get("observation", {})),
                            success_label=np.asarray(steps["success_label"], bool),
                            env_success=np.asarray(steps.get("env_success", steps["success_label"]), bool),
                            held=np.asarray(steps.get("held", np.zeros_like(steps["success_label"])), bool),
                            metadata=metadata, spec=spec)
    for key in [*(f"image_{c}" for c in spec.cameras), "state"]:
        if key not in frames.observation:
            raise RawEpisodeError(path, f"missing column steps/observation/{key}")
    columns = {f"observation/{k}": v for k, v in frames.observation.items()} | {
        "success_label": frames.success_label, "env_success": frames.env_success, "held": frames.held}
    lengths = {k: len(v) for k, v in columns.items()}
    if len(set(lengths.values())) != 1:
        raise RawEpisodeError(path, f"columns of different lengths {lengths}")
    return frames


# ---------------------------------------------------------------- labelling


def sim_label(observation: Mapping[str, Any], info: Mapping[str, Any]) -> bool:
    """The simulator's own success of this frame."""
    return bool(info.get(INFO_SUCCESS, False))


class HeldKeyLabeler:
    """`(observation, info) -> bool`: True while the operator holds `key` (a pygame key name).

    With the keyboard teleop device its window is used (`key` must not be one of its keys);
    otherwise this opens a small window of its own, green while the key is held. Closing it
    raises KeyboardInterrupt (stop recording).
    """

    def __init__(self, key: str, device: Any = None, window_size: tuple[int, int] = (460, 80)) -> None:
        from vlarft.robot_io.teleop.common import init_pygame

        try:
            self.pygame = pygame = init_pygame()
        except Exception as e:  # pygame.error: no display
            raise DeviceNotAvailableError(f"the label-key window needs a display ({e}); use --labeler=sim "
                                          f"on a headless simulator") from None
        try:
            self.key = pygame.key.key_code(key)
        except ValueError:
            raise ValueError(f"--label_key={key!r} is not a pygame key name (e.g. 'space', 'left shift')") from None
        self.key_name = key
        keymap = getattr(getattr(device, "config", None), "keymap", None)
        self.shared = keymap is not None and getattr(device, "screen", None) is not None
        if self.shared and self.key in keymap:
            raise ValueError(f"--label_key={key!r} is the keyboard device's {keymap[self.key]!r} key; pick "
                             f"another, e.g. --label_key='left shift'")
        self._screen = None
        if not self.shared:
            pygame.font.init()
            self._screen = pygame.display.set_mode(window_size)
            pygame.display.set_caption(f"hold {key.upper()} on success frames")
            self._font = pygame.font.Font(None, 24)
        self.success_frames = 0

    def __call__(self, observation: Mapping[str, Any], info: Mapping[str, Any]) -> bool:
        pygame = self.pygame
        if self.shared:
            pygame.event.pump()  # the device consumes the events; this only refreshes the key state
        elif any(event.type == pygame.QUIT for event in pygame.event.get()):
            raise KeyboardInterrupt
        held = bool(pygame.key.get_pressed()[self.key])
        self.success_frames += held
        if self._screen is not None:
            self._screen.fill((30, 140, 60) if held else (50, 50, 50))
            text = (f"{'SUCCESS' if held else 'failure'}  -  hold {self.key_name.upper()}  "
                    f"({self.success_frames} success frames)")
            self._screen.blit(self._font.render(text, True, (240, 240, 240)), (10, 30))
            pygame.display.flip()
        return held


def default_label_key(teleop: str) -> str:
    """space, unless the keyboard device drives (its space toggles the gripper): left shift."""
    return "left shift" if teleop == "keyboard" else "space"


class FrameRecorder(gym.Wrapper):
    """Keeps every observation the env returns with its label, `env_success` and `held` flag."""

    def __init__(self, env: gym.Env, label_fn: LabelFn) -> None:
        super().__init__(env)
        self.label_fn = label_fn
        self.frames: list[dict] = []
        self.last_action: np.ndarray | None = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        observation, info = self.env.reset(seed=seed, options=options)
        self.frames, self.last_action = [], None
        self._keep(observation, info, held=False)
        return observation, info

    def step(self, action: Any):
        self.last_action = np.asarray(action, np.float32).copy()
        observation, reward, terminated, truncated, info = self.env.step(action)
        self._keep(observation, info, held=False)
        return observation, reward, terminated, truncated, info

    def hold(self, steps: int, realtime_hz: float = 0.0) -> None:
        """`steps` more frames with the robot held still (no motion, gripper as last commanded)."""
        action = np.zeros(self.action_space.shape, np.float32)
        if self.last_action is not None:
            action[-1] = self.last_action[-1]
        for _ in range(steps):
            tick = time.monotonic()
            observation, _, _, _, info = self.env.step(action)
            self._keep(observation, info, held=True)
            if realtime_hz:
                time.sleep(max(0.0, 1.0 / realtime_hz - (time.monotonic() - tick)))

    def labelled(self, metadata: dict, spec: EpisodeSpec) -> LabelledFrames:
        """The frames recorded since the last reset."""
        keys = self.frames[0]["observation"].keys()
        column = lambda name: np.asarray([f[name] for f in self.frames], bool)
        return LabelledFrames(observation={k: np.stack([f["observation"][k] for f in self.frames]) for k in keys},
                              success_label=column("label"), env_success=column("env_success"),
                              held=column("held"), metadata=metadata, spec=spec)

    def _keep(self, observation: Mapping, info: Mapping, held: bool) -> None:
        self.frames.append({"observation": {k: np.array(v) for k, v in observation.items()},
                            "label": bool(self.label_fn(observation, info)),
                            "env_success": bool(info.get(INFO_SUCCESS, False)), "held": held})


# ---------------------------------------------------------------- recording


@dataclasses.dataclass
class FrameSummary:
    episodes: int = 0
    successful_episodes: int = 0
    success_frames: int = 0
    failure_frames: int = 0
    discarded: int = 0
    files: list[str] = dataclasses.field(default_factory=list)

    def as_dict(self) -> dict:
        return {"episodes": self.episodes, "successful_episodes": self.successful_episodes,
                "success_frames": self.success_frames, "failure_frames": self.failure_frames,
                "rerecorded": self.discarded}


def make_label_fn(labeler: str, teleop: str, device: Any, label_key: str = "") -> LabelFn:
    """The frame labeller: `sim` (the env's success) or `key` (a held key, see `HeldKeyLabeler`)."""
    if labeler == "sim":
        return sim_label
    if labeler == "key":
        return HeldKeyLabeler(label_key or default_label_key(teleop), device)
    raise ValueError(f"unknown labeler {labeler!r}; known: key, sim")


def record_frames(env_name: str, teleop: str, episodes: int, out_dir: str, *, labeler: str = "auto",
                  label_key: str = "", success_hold: int = 0, seed: int = 0, operator: str = "",
                  image_size: int = 128, realtime: bool | None = None, progress: bool = True) -> FrameSummary:
    """Records `episodes` episodes of labelled frames into `out_dir` (one file each)."""
    labeler = ("sim" if teleop.startswith("scripted") else "key") if labeler == "auto" else labeler
    out = Path(out_dir)
    base_env, device = open_device_env(env_name, teleop, seed, image_size, out)
    recorder = FrameRecorder(base_env, make_label_fn(labeler, teleop, device, label_key))
    env = InterventionWrapper(recorder, device)
    spec = base_env.unwrapped.robot_spec
    episode_spec = EpisodeSpec.from_robot_spec(spec)
    realtime_hz = spec.control_hz if (realtime if realtime is not None else not teleop.startswith("scripted")) else 0.0
    summary = FrameSummary()
    with recording_session(env, episodes, f"labelling {spec.task}", progress) as bar:
        while summary.episodes < episodes:
            builder = EpisodeBuilder(episode_spec, episode_id=f"{spec.task}-{uuid.uuid4().hex[:12]}",
                                     task=spec.task, instruction=spec.instruction, robot=spec.robot)
            episode_seed = seed + summary.episodes + summary.discarded
            outcome = record_episode(env, builder, seed=episode_seed, realtime_hz=realtime_hz)
            if outcome.episode is None:
                summary.discarded += 1
                continue
            if outcome.success and success_hold:
                recorder.hold(success_hold, realtime_hz)
            path = next_episode_path(out, spec.task)
            metadata = {"kind": KIND, "episode_id": builder.metadata["episode_id"], "task": spec.task,
                        "robot": spec.robot, "env": env_name, "labeler": labeler, "teleop": teleop,
                        "operator": operator or teleop, "seed": episode_seed, "episode_success": outcome.success,
                        "success_hold": success_hold if outcome.success else 0, "recorded_at": utc_now_iso(),
                        "file_path": str(path)}
            frames = recorder.labelled(metadata, episode_spec)
            write_labelled_frames(path, frames)
            positives = int(frames.success_label.sum())
            summary.episodes += 1
            summary.successful_episodes += outcome.success
            summary.success_frames += positives
            summary.failure_frames += len(frames) - positives
            summary.files.append(str(path))
            bar.update(1)
            bar.set_postfix(success_frames=summary.success_frames, failure_frames=summary.failure_frames)
    return summary


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_device_flags(parser)
    parser.add_argument("--labeler", choices=("auto", "key", "sim"), default="auto",
                        help="key: the operator holds --label_key on success frames; sim: the simulator's "
                             "success; auto: sim for scripted devices, else key")
    parser.add_argument("--label_key", default="",
                        help="pygame key name held on success frames (default space; with the keyboard device, "
                             "left shift)")
    parser.add_argument("--episodes", type=int, default=20, help="episodes to record")
    parser.add_argument("--out_dir", required=True, help="directory for the frame files")
    parser.add_argument("--success_hold", type=int, default=0,
                        help="extra frames recorded, robot held still, after each successful episode")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        summary = record_frames(args.env, args.teleop, args.episodes, args.out_dir, labeler=args.labeler,
                                label_key=args.label_key, success_hold=args.success_hold, seed=args.seed,
                                operator=args.operator, image_size=args.image_size,
                                realtime=REALTIME[args.realtime], progress=not args.no_progress)
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130
    except (ValueError, OSError, DeviceNotAvailableError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    stats = summary.as_dict()
    print(f"recorded {stats['episodes']} episode(s) in {args.out_dir} ({stats['successful_episodes']} successful): "
          f"{stats['success_frames']} success and {stats['failure_frames']} failure frames", file=sys.stderr)
    print(json.dumps({**stats, "out_dir": args.out_dir}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

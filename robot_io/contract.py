"""The environment contract shared by the simulator and real robots.

Every robot environment is a `gymnasium.Env` with
  * observation: a dict with one uint8 image per camera (`image_<camera>`, HxWx3) and the
    proprio vector `state` (float32, layout `STATE_LAYOUT`);
  * action: Box [-1, 1]^7 = (dx, dy, dz, drx, dry, drz, gripper), end-effector deltas scaled by
    the robot's per-task action scale; gripper -1 = fully open, +1 = fully closed;
  * info: `success` (bool) on every step, and, when a human device is in the loop,
    `intervention` (bool) and `intervention_action` (float32[7]).
Episodes end with `terminated=True` on task success (a true terminal), or `truncated=True` on
the time limit. Tools and agents only ever see this contract, never whether the robot is real.

Every environment also exposes `env.unwrapped.robot_spec` (a `RobotSpec`), telling recorders
and converters what they are looking at. A robot that must know when an episode ends before its
own time limit (the Franka's control watchdog) has `env.unwrapped.end_episode()`; wrappers that
end episodes themselves (operator buttons, a reward classifier) call `notify_episode_end(env)`.
"""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np

ACTION_DIM = 7
ACTION_NAMES = ("dx", "dy", "dz", "drx", "dry", "drz", "gripper")

# Proprio layout, like a real Franka's through the HIL-SERL robot server: TCP pose (position +
# xyz Euler angles), TCP twist, gripper opening (0 = closed, 1 = open), wrench at the flange.
STATE_LAYOUT = (
    ("tcp_pos", 3),
    ("tcp_euler", 3),
    ("tcp_vel", 6),
    ("gripper", 1),
    ("force", 3),
    ("torque", 3),
)
STATE_DIM = sum(n for _, n in STATE_LAYOUT)

INFO_SUCCESS = "success"
INFO_INTERVENTION = "intervention"
INFO_INTERVENTION_ACTION = "intervention_action"


def notify_episode_end(env: gym.Env) -> None:
    """Tell the robot under `env` that a wrapper ended the episode (no more steps until the next
    reset); a no-op for robots without `end_episode()`."""
    end = getattr(env.unwrapped, "end_episode", None)
    if callable(end):
        end()


def image_key(camera: str) -> str:
    """Observation key of a camera's image, Open X-Embodiment style (`image_front`)."""
    return f"image_{camera}"


def state_slice(name: str) -> slice:
    """Where a named proprio component sits in `state`."""
    start = 0
    for key, size in STATE_LAYOUT:
        if key == name:
            return slice(start, start + size)
        start += size
    raise KeyError(f"no proprio component {name!r}; known: {[k for k, _ in STATE_LAYOUT]}")


@dataclasses.dataclass(frozen=True)
class RobotSpec:
    """What a robot environment produces; recorded with every episode.

    Attributes:
      robot: robot name stored in episode metadata (e.g. `sim_panda_gripper`, `franka`).
      task: task name (e.g. `pick_cube`).
      instruction: the natural-language instruction of the task.
      cameras: camera name -> (height, width) of its image.
      state_dim: length of the proprio vector.
      action_dim: length of the action vector.
      control_hz: control frequency.
      max_episode_steps: time limit in control steps.
    """

    robot: str
    task: str
    instruction: str
    cameras: dict[str, tuple[int, int]]
    state_dim: int = STATE_DIM
    action_dim: int = ACTION_DIM
    control_hz: float = 10.0
    max_episode_steps: int = 100


def observation_space(spec: RobotSpec) -> gym.spaces.Dict:
    """The observation space a robot with `spec` must produce."""
    spaces = {
        image_key(cam): gym.spaces.Box(0, 255, shape=(h, w, 3), dtype=np.uint8)
        for cam, (h, w) in spec.cameras.items()
    }
    spaces["state"] = gym.spaces.Box(-np.inf, np.inf, shape=(spec.state_dim,), dtype=np.float32)
    return gym.spaces.Dict(spaces)


def action_space(spec: RobotSpec) -> gym.spaces.Box:
    """The normalised action box [-1, 1]^action_dim."""
    return gym.spaces.Box(-1.0, 1.0, shape=(spec.action_dim,), dtype=np.float32)


def require_cameras(env: gym.Env, cameras: dict[str, tuple[int, int]], env_name: str) -> gym.Env:
    """`env` when it has every camera of `cameras` (name -> (height, width)) at that size, as a
    policy trained on them needs; else the env is closed and ValueError names what is missing."""
    spaces = env.observation_space.spaces
    found = {key[len("image_"):]: tuple(space.shape[:2]) for key, space in spaces.items() if key.startswith("image_")}
    wrong = {name: tuple(size) for name, size in cameras.items() if found.get(name) != tuple(size)}
    if wrong:
        env.close()
        problems = ", ".join(f"{name!r} {list(size)}" + (" is missing" if name not in found else
                                                          f" is {list(found[name])}") for name, size in wrong.items())
        raise ValueError(f"{env_name}: the policy needs camera {problems} (the env has "
                         f"{ {name: list(size) for name, size in found.items()} }; a task TOML lists them as [[cameras]])")
    return env

"""`FrankaEnv`: a real Franka arm behind the HIL-SERL HTTP server, through the environment contract.

    env = make_franka_env("pick_place", server_url="http://172.16.0.1:5000/")

Control (one step = one control period, `1 / control_hz`, held with a monotonic clock):
  1. the action (dx dy dz drx dry drz gripper) is validated (`safety.validate_action`);
  2. the target pose is computed from the last observed (measured) TCP pose p, R:
       d = pos_scale · a[0:3],  w = rot_scale · a[3:6]  (expressed in the action frame F),
       target position = p + R_F d,  target rotation = exp([R_F w]) · R
     where R_F is the episode's reset-pose orientation (`action_frame = "reset"`, the default;
     with yaw randomisation it is the randomised one), the measured TCP orientation at this step
     (`"tcp"`, what HIL-SERL's RelativeFrame wrapper does with its adjoint, minus the adjoint's
     p×R coupling of rotation into translation) or the identity (`"base"`). So +1 dx moves the
     target `pos_scale` metres along the reset pose's tool x axis;
  3. the target is clipped to the workspace box (`safety.WorkspaceBox`, ±π wrap handled);
  4. `clearerr` (if `clear_errors_each_step`), the gripper command if due, then `pose`;
  5. wait until the period is over, then read `getstate` and the cameras.
Gripper: `close_gripper` when the action is ≥ `gripper_threshold` and the last command was
"open", `open_gripper` when ≤ -threshold and the last was "closed", never sooner than
`gripper_sleep_s` after the previous gripper command (a held action is sent once it may).
Every request of a step has the time left in the period + watchdog margin as its total deadline
(a server trickling its answer cannot stretch it); a server that stops answering, a dead camera,
an overrun (noticed by the watchdog's own thread even while step() is stuck inside a request) or
a stalled caller trips the `ControlWatchdog`: the last measured pose is posted as a hold, nothing
more is sent, and step() raises `RobotSafetyStop` until reset().

Reset: `clearerr`; hold the measured pose; `update_param` precision mode (if given); a
`jointreset` every `joint_reset_every`-th reset (or `reset(options={"joint_reset": True})`);
the gripper per `reset_gripper`; an interpolated move (linear position, slerp orientation, over
`reset_move_s` at `control_hz`) to the reset pose randomised uniformly (x, y in ±reset_xy_range,
z in ±reset_z_range, yaw about the base z axis in ±reset_yaw_range, `np_random`, so seeded by
`reset(seed=...)`) and clipped to the box; `update_param` compliance mode; `clearerr`.

Observation: `image_<camera>` from `vlarft.robot_io.cameras` and `state` in `STATE_LAYOUT`
order: TCP position, TCP xyz Euler angles (each wrapped into the workspace box's 2π window, so
roll near π does not jump between ±π), TCP twist (base frame), gripper opening (0 closed ..
1 open), force, torque. Reward: 0 and info["success"] = False from the env itself; with
`reward_source = "operator"` success comes from the operator's SUCCESS button
(`intervention.operator_outcome`), with `"classifier"` `make_franka_env` wraps the env in
`RewardClassifierWrapper`. Episodes end by `truncated` at `max_episode_steps`; wrappers that end
one sooner call `end_episode()` (through `contract.notify_episode_end`), which disarms the watchdog.
"""

from __future__ import annotations

import logging
import time
from typing import ClassVar

import gymnasium as gym
import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from vlarft.robot_io.cameras import CameraError, CameraRig
from vlarft.robot_io.contract import INFO_SUCCESS, STATE_DIM, RobotSpec, action_space, image_key, observation_space
from vlarft.robot_io.franka.client import FrankaClient, RobotConnectionError, RobotState
from vlarft.robot_io.franka.safety import ControlWatchdog, validate_action
from vlarft.robot_io.task_config import TaskConfig, load_task_config

log = logging.getLogger(__name__)

_OPEN, _CLOSED = "open", "closed"


class FrankaEnv(gym.Env):
    """The real arm (see the module docstring); `FrankaEnv(task_config)`.

    Args:
      config: the task.
      cameras: a camera rig to use instead of one built from `config.cameras` (it is started
        here and closed by `close()`).
    """

    metadata: ClassVar[dict] = {"render_modes": ["rgb_array"]}

    def __init__(self, config: TaskConfig, cameras: CameraRig | None = None):
        self.config = config
        self.render_mode = "rgb_array"
        self.robot_spec = RobotSpec(
            robot="franka",
            task=config.name,
            instruction=config.instruction,
            cameras={c.name: c.size for c in config.cameras},
            control_hz=config.control_hz,
            max_episode_steps=config.max_episode_steps,
        )
        self.observation_space = observation_space(self.robot_spec)
        self.action_space = action_space(self.robot_spec)
        self.teleop_options = config.teleop  # the lab's device settings (`teleop.make_device_for`)
        self.workspace = config.workspace
        self.period_s = 1.0 / config.control_hz
        self.client = FrankaClient(config.server_url, timeout_s=config.request_timeout_s)
        # The watchdog's hold runs on its own connection: it may fire from the watchdog thread.
        self._hold_client = FrankaClient(config.server_url, timeout_s=config.watchdog_margin_s, retries=0)
        self.watchdog = ControlWatchdog(self.period_s, config.watchdog_margin_s, self._hold,
                                        name=f"Franka server {self.client.url}")
        self.rig = cameras or CameraRig(config.cameras)
        self.state: RobotState | None = None  # the last measured state (the last observation's)
        self.last_target: np.ndarray | None = None  # the last `pose` sent by step()
        self.episode_reset_pose: np.ndarray | None = None  # this episode's reset pose, xyz + quat
        self.resets = 0
        self._steps = 0
        self._gripper_command: str | None = None
        self._gripper_time = -np.inf
        self._images: dict[str, np.ndarray] = {}
        try:
            self.state = self.client.get_state()  # fail fast on a wrong URL
            self.rig.start()
        except BaseException:
            self._shutdown()
            raise

    # --- gym API ----------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Move to a (randomised) reset pose and return the first observation (module docstring)."""
        super().reset(seed=seed)
        cfg, client = self.config, self.client
        self.watchdog.reset()
        self.episode_reset_pose = None  # a reset that fails half-way leaves the env unusable until the next
        self.resets += 1
        joint_reset = bool((options or {}).get("joint_reset")) or (
            cfg.joint_reset_every > 0 and self.resets % cfg.joint_reset_every == 0)
        client.clear_error()
        self.state = client.get_state()
        client.send_pose(self.state.pose)  # hold still while switching modes
        self._switch_mode(cfg.precision_params)
        if joint_reset:
            log.info("joint reset (reset %d) on %s", self.resets, client.url)
            client.joint_reset(timeout=cfg.joint_reset_timeout_s)
            client.clear_error()
        self._reset_gripper()
        self.episode_reset_pose = self._random_reset_pose()
        self._move_to(self.episode_reset_pose)
        self._switch_mode(cfg.compliance_params)
        client.clear_error()
        self.state = client.get_state()
        self._images = self.rig.images()
        self._steps = 0
        self.last_target = None
        return self._observation(), {INFO_SUCCESS: False}

    def step(self, action):
        """Apply one action for one control period (module docstring); RobotSafetyStop on trouble."""
        action = validate_action(action)
        if self.state is None or self.episode_reset_pose is None:
            raise RuntimeError("call reset() before step()")
        due = self.watchdog.begin_step()
        time_left = self.watchdog.time_left
        try:
            target = self._target(action)
            if self.config.clear_errors_each_step:
                self.client.clear_error(timeout=time_left("waiting for route 'clearerr'"))
            self._gripper(action[6], time_left)
            self.client.send_pose(target, timeout=time_left("waiting for route 'pose'"))
            self.last_target = target
            time.sleep(max(0.0, due - time.monotonic()))
            self.state = self.client.get_state(timeout=time_left("waiting for route 'getstate'"))
            time_left("reading the cameras")
            self._images = self.rig.images()
        except RobotConnectionError as err:
            raise self.watchdog.trip(f"route {err.route!r}: {err.reason}") from err
        except CameraError as err:
            raise self.watchdog.trip(str(err)) from err
        self.watchdog.end_step()
        self._steps += 1
        truncated = self._steps >= self.config.max_episode_steps
        if truncated:
            self.watchdog.end_episode()
        return self._observation(), 0.0, False, truncated, {INFO_SUCCESS: False}

    def render(self) -> np.ndarray:
        """The last observation's first camera image."""
        if not self._images:
            raise RuntimeError("no observation yet: call reset() first")
        return next(iter(self._images.values()))

    def close(self) -> None:
        """Stop the watchdog, the cameras and the connections (the arm keeps its last target)."""
        try:
            self.rig.close()
        finally:
            self._shutdown()

    def end_episode(self) -> None:
        """The episode ended outside this env (the operator's SUCCESS / FAILURE / END_EPISODE /
        RERECORD button, a reward classifier's success): the watchdog stops expecting steps until
        the next step(), so the pause before the next reset is not taken for a stalled client."""
        self.watchdog.end_episode()

    @property
    def elapsed_steps(self) -> int:
        """Control steps since the last reset."""
        return self._steps

    # --- control ----------------------------------------------------------------------------

    def _frame(self) -> Rotation:
        """Orientation of the frame actions are expressed in (`action_frame`)."""
        if self.config.action_frame == "reset":
            return Rotation.from_quat(self.episode_reset_pose[3:])
        if self.config.action_frame == "tcp":
            return Rotation.from_quat(self.state.quat)
        return Rotation.identity()

    def _target(self, action: np.ndarray) -> np.ndarray:
        """The clipped target pose [x,y,z,qx,qy,qz,qw] for `action` from the last measured pose."""
        cfg, frame = self.config, self._frame()
        position = self.state.position + frame.apply(action[:3] * cfg.pos_scale)
        rotation = Rotation.from_rotvec(frame.apply(action[3:6] * cfg.rot_scale)) * Rotation.from_quat(self.state.quat)
        position, quat = self.workspace.clip(position, rotation.as_quat())
        return np.concatenate([position, quat])

    def _gripper(self, value: float, time_left) -> None:
        """Debounced open/close (module docstring)."""
        if not self.config.gripper_enabled:
            return
        threshold = self.config.gripper_threshold
        wanted = _CLOSED if value >= threshold else _OPEN if value <= -threshold else None
        if wanted is None or wanted == self._gripper_command:
            return
        if time.monotonic() - self._gripper_time < self.config.gripper_sleep_s:
            return
        if wanted == _CLOSED:
            self.client.close_gripper(timeout=time_left("waiting for route 'close_gripper'"))
        else:
            self.client.open_gripper(timeout=time_left("waiting for route 'open_gripper'"))
        self._gripper_command, self._gripper_time = wanted, time.monotonic()

    def _hold(self) -> str:
        """The watchdog's stop: command the last measured pose (one short attempt)."""
        if self.state is None:
            return "no measured pose to hold"
        self._hold_client.send_pose(self.state.pose)
        return f"hold at the last measured pose {np.round(self.state.pose, 4).tolist()} sent"

    # --- reset ------------------------------------------------------------------------------

    def _switch_mode(self, params: dict[str, float]) -> None:
        if params:
            self.client.update_params(params)
            time.sleep(self.config.reset_pause_s)

    def _reset_gripper(self) -> None:
        mode = self.config.reset_gripper
        if mode == "keep":
            self._gripper_command = _OPEN if self.state.gripper_pos >= 0.5 else _CLOSED
            self._gripper_time = -np.inf
            return
        (self.client.open_gripper if mode == _OPEN else self.client.close_gripper)()
        self._gripper_command, self._gripper_time = mode, time.monotonic()

    def _random_reset_pose(self) -> np.ndarray:
        cfg, rng = self.config, self.np_random
        position = np.asarray(cfg.reset_pose[:3], np.float64).copy()
        position[:2] += rng.uniform(-cfg.reset_xy_range, cfg.reset_xy_range, 2)
        position[2] += rng.uniform(-cfg.reset_z_range, cfg.reset_z_range)
        yaw = Rotation.from_euler("z", rng.uniform(-cfg.reset_yaw_range, cfg.reset_yaw_range))
        rotation = yaw * Rotation.from_euler("xyz", cfg.reset_pose[3:])
        position, quat = self.workspace.clip(position, rotation.as_quat())
        return np.concatenate([position, quat])

    def _move_to(self, goal: np.ndarray) -> None:
        """Interpolated move from the measured pose (read now: a joint reset moved the arm) to `goal`."""
        start = self.client.get_state().pose
        steps = max(1, round(self.config.reset_move_s * self.config.control_hz))
        slerp = Slerp([0.0, 1.0], Rotation.from_quat([start[3:], goal[3:]]))
        self.client.clear_error()
        for alpha in np.linspace(0.0, 1.0, steps + 1)[1:]:
            tick = time.monotonic()
            self.client.send_pose(np.concatenate([(1 - alpha) * start[:3] + alpha * goal[:3],
                                                  slerp(alpha).as_quat()]))
            time.sleep(max(0.0, tick + self.period_s - time.monotonic()))

    # --- observation ------------------------------------------------------------------------

    def _observation(self) -> dict[str, np.ndarray]:
        s = self.state
        state = np.concatenate([s.position, self.workspace.wrap_euler(s.euler), s.vel,
                                [np.clip(s.gripper_pos, 0.0, 1.0)], s.force, s.torque])
        assert state.shape == (STATE_DIM,)
        return {**{image_key(name): image for name, image in self._images.items()},
                "state": state.astype(np.float32)}

    def _shutdown(self) -> None:
        self.watchdog.close()
        self.client.close()
        self._hold_client.close()


def make_franka_env(task: str, **overrides) -> gym.Env:
    """`FrankaEnv` for a bundled task name or a task TOML path (fields overridable by keyword);
    wrapped in `RewardClassifierWrapper` when the task's reward source is `classifier`."""
    config = load_task_config(task, **overrides)
    env = FrankaEnv(config)
    if config.reward_source != "classifier":
        return env
    try:
        from vlarft.robot_io.reward import RewardClassifierWrapper

        return RewardClassifierWrapper(env, classifier_dir=config.classifier_dir,
                                       threshold=config.classifier_threshold)
    except BaseException:
        env.close()
        raise

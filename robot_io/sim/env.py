"""`SimRobotEnv`: a MuJoCo two-finger gripper implementing the environment contract.

Control: every step the normalised action (dx dy dz drx dry drz gripper) moves the mocap target
of the hand by `pos_scale` m / `rot_scale` rad per unit (rotations are world-frame deltas), the
target is clipped to the workspace box and the orientation limits, and the physics runs
`1 / (control_hz * timestep)` substeps while the mocap target glides linearly to its new pose.
The hand follows through a (compliant) weld, so contacts produce forces instead of explosions.

Proprio `state` (float32[19], `STATE_LAYOUT`): TCP position (world, m), TCP extrinsic xyz Euler
angles (0 = gripper upright), TCP linear and angular velocity (world), gripper opening (0 closed
.. 1 open), and force / torque measured at the flange in the hand frame, zeroed at reset.
Reward is 1.0 on the step that reaches the task's success (which terminates the episode).
"""

from __future__ import annotations

import dataclasses
import math

import gymnasium as gym
import mujoco
import numpy as np

from vlarft.robot_io.contract import (
    ACTION_DIM,
    INFO_SUCCESS,
    STATE_DIM,
    RobotSpec,
    action_space,
    image_key,
    observation_space,
)
from vlarft.robot_io.interrupts import interrupts_deferred
from vlarft.robot_io.sim.scene import CAMERAS, FINGER_NAMES, FINGER_TRAVEL, SceneConfig, build_mjcf
from vlarft.robot_io.sim.tasks import make_task

_TARGET_CHUNKS = 10  # the mocap target glides to its new pose in this many increments per step


@dataclasses.dataclass(frozen=True)
class SimConfig:
    """Configuration of `SimRobotEnv`.

    Attributes:
      task: task name, see `vlarft.robot_io.sim.tasks.TASKS`.
      image_size: (height, width) of both camera images; an int means a square image.
      max_episode_steps: time limit in control steps (then `truncated=True`).
      control_hz: control frequency.
      pos_scale: TCP translation per unit action per step, m (2 cm).
      rot_scale: TCP rotation per unit action per step, rad.
      render_images: False = fast mode for tests of scripted operators only: no rendering at
        all, every image is an all-zero array of the right shape.
      seed: seed of the first `reset()` when it is called without one.
      timestep: physics time step, s.
      workspace_low / workspace_high: box the TCP target is clipped to, m.
      max_tilt: limit of the TCP roll and pitch, rad.
      max_yaw: limit of the TCP yaw, rad.
      max_target_lead: the mocap target never leads the TCP by more than this per axis, m: it
        bounds the force of a blocked hand (~60 N) like a real impedance controller's error clip.
      settle_time: physics time simulated at reset before the first observation, s.
    """

    task: str = "pick_cube"
    image_size: int | tuple[int, int] = (128, 128)
    max_episode_steps: int = 100
    control_hz: float = 10.0
    pos_scale: float = 0.02
    rot_scale: float = 0.1
    render_images: bool = True
    seed: int | None = None
    timestep: float = 0.002
    workspace_low: tuple[float, float, float] = (-0.16, -0.16, 0.01)
    workspace_high: tuple[float, float, float] = (0.18, 0.16, 0.30)
    max_tilt: float = 0.5
    max_yaw: float = 1.5
    max_target_lead: float = 0.015
    settle_time: float = 0.2

    def __post_init__(self):
        size = (self.image_size,) * 2 if np.ndim(self.image_size) == 0 else self.image_size
        object.__setattr__(self, "image_size", tuple(int(v) for v in size))

    @property
    def substeps(self) -> int:
        """Physics steps per control step."""
        return max(1, round(1.0 / (self.control_hz * self.timestep)))


# --- rotations (quaternions are MuJoCo's w, x, y, z) ---------------------------------------


def quat_to_euler_xyz(quat: np.ndarray) -> np.ndarray:
    """Extrinsic xyz Euler angles (roll, pitch, yaw) of a unit quaternion: R = Rz Ry Rx."""
    mat = np.empty(9)
    mujoco.mju_quat2Mat(mat, np.asarray(quat, np.float64))
    r = mat.reshape(3, 3)
    return np.array(
        [math.atan2(r[2, 1], r[2, 2]), -math.asin(np.clip(r[2, 0], -1.0, 1.0)), math.atan2(r[1, 0], r[0, 0])]
    )


def _axis_quat(axis: int, angle: float) -> np.ndarray:
    quat = np.zeros(4)
    quat[0], quat[1 + axis] = math.cos(angle / 2), math.sin(angle / 2)
    return quat


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.empty(4)
    mujoco.mju_mulQuat(out, a, b)
    return out


def euler_xyz_to_quat(euler: np.ndarray) -> np.ndarray:
    """Inverse of `quat_to_euler_xyz`."""
    return _quat_mul(_axis_quat(2, euler[2]), _quat_mul(_axis_quat(1, euler[1]), _axis_quat(0, euler[0])))


def _rotvec_to_quat(rotvec: np.ndarray) -> np.ndarray:
    angle = float(np.linalg.norm(rotvec))
    quat = np.array([1.0, 0.0, 0.0, 0.0])
    if angle > 1e-12:
        mujoco.mju_axisAngle2Quat(quat, rotvec / angle, angle)
    return quat


def _nlerp(a: np.ndarray, b: np.ndarray, alpha: float) -> np.ndarray:
    if np.dot(a, b) < 0:
        b = -b
    quat = (1 - alpha) * a + alpha * b
    return quat / np.linalg.norm(quat)


# --- the environment -------------------------------------------------------------------------


class SimRobotEnv(gym.Env):
    """Simulated two-finger gripper on a table; `SimRobotEnv(SimConfig(task=...))` or kwargs."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, config: SimConfig | None = None, render_mode: str | None = "rgb_array", **overrides):
        self.config = dataclasses.replace(config or SimConfig(), **overrides)
        self.render_mode = render_mode
        self.task = make_task(self.config.task)
        self.model = mujoco.MjModel.from_xml_string(build_mjcf(self._scene_config()))
        self.data = mujoco.MjData(self.model)
        height, width = self.config.image_size
        self.robot_spec = RobotSpec(
            robot="sim_gripper",
            task=self.task.name,
            instruction=self.task.instruction,
            cameras={cam: (height, width) for cam in CAMERAS},
            max_episode_steps=self.config.max_episode_steps,
            control_hz=self.config.control_hz,
        )
        self.observation_space = observation_space(self.robot_spec)
        self.action_space = action_space(self.robot_spec)
        self._renderer: mujoco.Renderer | None = None
        self._tcp_site = self.model.site("tcp").id
        self._finger_qpos = [self.model.joint(n).qposadr[0] for n in FINGER_NAMES]
        self._finger_act = [self.model.actuator(n).id for n in FINGER_NAMES]
        self._target_pos = np.zeros(3)
        self._target_quat = np.array([1.0, 0.0, 0.0, 0.0])
        self._ft_bias = np.zeros(6)
        self._steps = 0
        self._seeded = False

    def _scene_config(self) -> SceneConfig:
        return SceneConfig(
            image_size=self.config.image_size,
            timestep=self.config.timestep,
            hand_init_pos=self.task.hand_init_pos,
            objects_xml=self.task.objects_xml(),
            attachment_xml=self.task.attachment_xml(),
        )

    # --- gym API ---------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Randomise the task objects (deterministic given `seed`) and return the first obs."""
        if seed is None and not self._seeded:
            seed = self.config.seed
        super().reset(seed=seed)
        self._seeded = True
        mujoco.mj_resetData(self.model, self.data)
        self.task.reset(self.model, self.data, self.np_random)
        self._reset_hand()
        mujoco.mj_forward(self.model, self.data)
        mujoco.mj_step(self.model, self.data, nstep=round(self.config.settle_time / self.config.timestep))
        self._ft_bias = self._raw_wrench()
        self._steps = 0
        return self._observation(), {INFO_SUCCESS: False}

    def step(self, action):
        """Apply one normalised action for one control period."""
        if not self._seeded:
            raise RuntimeError("call reset() before step()")
        action = self._validated(action)
        self._apply(action)
        self._steps += 1
        success = self.task.is_success(self.model, self.data)
        truncated = not success and self._steps >= self.config.max_episode_steps
        return self._observation(), float(success), success, truncated, {INFO_SUCCESS: success}

    def render(self) -> np.ndarray:
        """The front camera image (rendered even when `render_images=False`)."""
        return self._render_camera("front")

    def close(self) -> None:
        """Free the renderer."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    # --- extras ----------------------------------------------------------------------------

    def privileged_state(self) -> dict[str, np.ndarray]:
        """Ground truth for scripted operators and tests: TCP, mocap target, task objects."""
        tcp_quat = self._tcp_quat()
        return {
            "tcp_pos": self.data.site_xpos[self._tcp_site].copy(),
            "tcp_quat": tcp_quat,
            "tcp_euler": quat_to_euler_xyz(tcp_quat),
            "target_pos": self._target_pos.copy(),
            "gripper_opening": np.float64(self._gripper_opening()),
            **self.task.privileged_state(self.model, self.data),
        }

    @property
    def elapsed_steps(self) -> int:
        """Control steps since the last reset."""
        return self._steps

    # --- internals -------------------------------------------------------------------------

    def _reset_hand(self) -> None:
        pos = np.asarray(self.task.hand_init_pos, np.float64)
        quat = np.array([1.0, 0.0, 0.0, 0.0])
        self.data.joint("hand_free").qpos[:] = np.concatenate([pos, quat])
        self.data.mocap_pos[0], self.data.mocap_quat[0] = pos, quat
        self._target_pos, self._target_quat = pos.copy(), quat.copy()
        held = self.task.finger_pos_holding_at_reset()
        self.data.ctrl[self._finger_act] = self._gripper_ctrl(-1.0 if held is None else 1.0)
        self.data.qpos[self._finger_qpos] = self.data.ctrl[self._finger_act] if held is None else held

    def _validated(self, action) -> np.ndarray:
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (ACTION_DIM,):
            raise ValueError(f"action must have shape ({ACTION_DIM},), got {action.shape}")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action contains NaN or Inf: {action}")
        return np.clip(action, -1.0, 1.0)

    def _gripper_ctrl(self, gripper: float) -> float:
        """Finger position target: -1 = open, +1 = closed (unless the task locks the fingers)."""
        locked = self.task.locked_finger_pos()
        return FINGER_TRAVEL * (1.0 - gripper) / 2.0 if locked is None else locked

    def _next_target(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cfg = self.config
        pos = np.clip(self._target_pos + action[:3] * cfg.pos_scale, cfg.workspace_low, cfg.workspace_high)
        quat = _quat_mul(_rotvec_to_quat(action[3:6] * cfg.rot_scale), self._target_quat)
        limits = np.array([cfg.max_tilt, cfg.max_tilt, cfg.max_yaw])
        quat = euler_xyz_to_quat(np.clip(quat_to_euler_xyz(quat), -limits, limits))
        return pos, quat

    def _apply(self, action: np.ndarray) -> None:
        """Glide the mocap target to the new target pose while running the physics."""
        start_pos, start_quat = self._target_pos, self._target_quat
        goal_pos, self._target_quat = self._next_target(action)
        self.data.ctrl[self._finger_act] = self._gripper_ctrl(action[6])
        substeps = self.config.substeps
        bounds = np.linspace(0, substeps, min(_TARGET_CHUNKS, substeps) + 1).round().astype(int)
        for done, nstep in zip(bounds[1:], np.diff(bounds)):
            alpha = done / substeps
            self.data.mocap_pos[0] = self._leashed(start_pos + alpha * (goal_pos - start_pos))
            self.data.mocap_quat[0] = _nlerp(start_quat, self._target_quat, alpha)
            mujoco.mj_step(self.model, self.data, nstep=int(nstep))
        self._target_pos = self.data.mocap_pos[0].copy()  # a blocked hand does not wind up

    def _leashed(self, pos: np.ndarray) -> np.ndarray:
        """`pos` clipped to `max_target_lead` from the TCP: bounds the force of a blocked hand."""
        tcp, lead = self.data.site_xpos[self._tcp_site], self.config.max_target_lead
        return tcp + np.clip(pos - tcp, -lead, lead)

    def _gripper_opening(self) -> float:
        return float(np.clip(np.mean(self.data.qpos[self._finger_qpos]) / FINGER_TRAVEL, 0.0, 1.0))

    def _raw_wrench(self) -> np.ndarray:
        return np.concatenate([self.data.sensor("ft_force").data, self.data.sensor("ft_torque").data])

    def _tcp_quat(self) -> np.ndarray:
        quat = np.empty(4)
        mujoco.mju_mat2Quat(quat, self.data.site_xmat[self._tcp_site])
        return quat

    def _state(self) -> np.ndarray:
        """The proprio vector in `STATE_LAYOUT` order."""
        twist = np.empty(6)  # (angular, linear) in the world frame
        mujoco.mj_objectVelocity(self.model, self.data, mujoco.mjtObj.mjOBJ_SITE, self._tcp_site, twist, 0)
        state = np.concatenate(
            [
                self.data.site_xpos[self._tcp_site],
                quat_to_euler_xyz(self._tcp_quat()),
                twist[3:],
                twist[:3],
                [self._gripper_opening()],
                self._raw_wrench() - self._ft_bias,
            ]
        )
        assert state.shape == (STATE_DIM,)
        return state.astype(np.float32)

    def _render_camera(self, camera: str) -> np.ndarray:
        if self._renderer is None:
            height, width = self.config.image_size
            self._renderer = mujoco.Renderer(self.model, height, width)
            for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION):
                self._renderer.scene.flags[flag] = False
        self._renderer.update_scene(self.data, camera)
        return self._renderer.render()

    def _images(self) -> dict[str, np.ndarray]:
        if self.config.render_images:
            with interrupts_deferred(python_handlers_only=True):  # a Ctrl-C inside EGL's ctypes calls
                return {image_key(cam): self._render_camera(cam) for cam in CAMERAS}
        height, width = self.config.image_size
        return {image_key(cam): np.zeros((height, width, 3), np.uint8) for cam in CAMERAS}

    def _observation(self) -> dict[str, np.ndarray]:
        return {**self._images(), "state": self._state()}

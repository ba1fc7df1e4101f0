"""Human-in-the-loop interventions: a teleop device overrides the policy while engaged.

`InterventionWrapper(env, device)` polls the device once per `step(policy_action)`:
  * engaged: the device action, clipped into the action box, is executed;
    info["intervention"] = True and info["intervention_action"] = that action;
  * not engaged: the policy action is executed (clipped); info["intervention"] = False and
    info["intervention_action"] = zeros.
The policy action is validated at every step (float[action_dim], finite), even when the human
overrides it, so a broken policy is noticed at once; a bad action raises ValueError.

PAUSE (a device button) toggles a paused state. While paused and the human is not engaged, the
wrapper sends a hold-still action instead of the policy's: zero motion, gripper at its last
executed value. The env keeps stepping; info["paused"] marks these steps (neither policy nor
human actions, so recorders may drop them). Engaging while paused still moves the robot; every
reset unpauses.

SUCCESS, FAILURE, END_EPISODE and RERECORD end the episode (`operator_outcome`); the wrapper
tells the robot at once (`contract.notify_episode_end`: the Franka's watchdog then stops
expecting steps).

Every step's info also has "buttons" (the device's events this step), "executed_action" and this
episode's intervention statistics "intervention_segments" (engaged runs) and
"intervention_steps" (engaged steps), also available as attributes.

Devices with `sync_gripper(value)` are told the executed gripper command while the policy is in
control (taking over then keeps the gripper as it is); devices with `show(observation)` (the
keyboard window) get every observation. `close()` closes the device and the env.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import gymnasium as gym
import numpy as np

from vlarft.robot_io.contract import (
    INFO_INTERVENTION,
    INFO_INTERVENTION_ACTION,
    INFO_SUCCESS,
    notify_episode_end,
)
from vlarft.robot_io.teleop.common import GRIPPER_OPEN
from vlarft.robot_io.teleop.base import END_EPISODE, FAILURE, PAUSE, RERECORD, SUCCESS, TeleopDevice


EPISODE_END_BUTTONS = frozenset({SUCCESS, FAILURE, END_EPISODE, RERECORD})  # see `operator_outcome`


def checked_action(action: Any, space: gym.spaces.Box, what: str) -> np.ndarray:
    """`action` as a float array clipped into `space`; ValueError if its shape or values are bad."""
    dim = space.shape[0]
    try:
        array = np.asarray(action, dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"{what} must be {dim} numbers (action dimension {dim}), got {action!r}") from err
    if array.shape != space.shape:
        raise ValueError(f"{what} must have shape {space.shape} (action dimension {dim}), "
                         f"got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(
            f"{what} must be {dim} finite numbers (action dimension {dim}), got {array}")
    return np.clip(array, space.low, space.high).astype(space.dtype)


class InterventionWrapper(gym.Wrapper):
    """Lets a `TeleopDevice` take over from the policy (see the module docstring)."""

    def __init__(self, env: gym.Env, device: TeleopDevice) -> None:
        super().__init__(env)
        if not isinstance(env.action_space, gym.spaces.Box) or len(env.action_space.shape) != 1:
            raise TypeError(
                f"InterventionWrapper needs a 1-D Box action space, got {env.action_space}")
        self.device = device
        self.paused = False
        self.intervention_segments = 0
        self.intervention_steps = 0
        self._engaged = False
        self._gripper = GRIPPER_OPEN

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Reset the env, then the device; unpause and zero the intervention statistics."""
        observation, info = self.env.reset(seed=seed, options=options)
        self.device.reset()
        self.paused, self._engaged, self._gripper = False, False, GRIPPER_OPEN
        self.intervention_segments = self.intervention_steps = 0
        self._show(observation)
        return observation, {**info, **self._stats()}

    def step(self, action: Any):
        """Execute the device action if the human is engaged, else the policy action."""
        policy_action = checked_action(action, self.action_space, "policy action")
        command = self.device.poll()
        engaged = bool(command.engaged)
        if PAUSE in command.buttons:
            self.paused = not self.paused
        if engaged:
            executed = checked_action(command.action, self.action_space, "teleop device action")
            self.intervention_segments += not self._engaged
            self.intervention_steps += 1
        else:
            executed = self._hold_still() if self.paused else policy_action
        self._engaged = engaged
        observation, reward, terminated, truncated, info = self.env.step(executed)
        if command.buttons & EPISODE_END_BUTTONS:
            notify_episode_end(self.env)
        self._track_gripper(executed, engaged)
        info = {
            **info,
            INFO_INTERVENTION: engaged,
            INFO_INTERVENTION_ACTION: executed.copy() if engaged else np.zeros_like(executed),
            "buttons": command.buttons,
            "executed_action": executed.copy(),
            **self._stats(),
        }
        self._show(observation)
        return observation, reward, terminated, truncated, info

    def close(self) -> None:
        """Close the device, then the env."""
        self.device.close()
        super().close()

    def _hold_still(self) -> np.ndarray:
        action = np.zeros(self.action_space.shape, self.action_space.dtype)
        action[-1] = self._gripper
        return np.clip(action, self.action_space.low, self.action_space.high)

    def _track_gripper(self, executed: np.ndarray, engaged: bool) -> None:
        self._gripper = float(executed[-1])
        sync = getattr(self.device, "sync_gripper", None)
        if not engaged and callable(sync):
            sync(self._gripper)

    def _show(self, observation: Any) -> None:
        show = getattr(self.device, "show", None)
        if callable(show):
            show(observation)

    def _stats(self) -> dict[str, Any]:
        return {
            "intervention_segments": self.intervention_segments,
            "intervention_steps": self.intervention_steps,
            "paused": self.paused,
        }


@dataclasses.dataclass(frozen=True)
class StepOutcome:
    """One env step after the operator's buttons were applied."""

    reward: float
    terminated: bool
    truncated: bool
    success: bool
    rerecord: bool


def operator_outcome(reward: float, terminated: bool, truncated: bool, info: dict) -> StepOutcome:
    """Applies this step's operator buttons to the env's step result.

    SUCCESS / FAILURE end the episode as a true terminal with reward 1 / 0 (a success the env
    itself detected stands); END_EPISODE ends it as a time-limit end (bootstrapped);
    RERECORD asks the caller to discard the episode.
    """
    buttons = info.get("buttons", frozenset())
    success = bool(info.get(INFO_SUCCESS))
    if not success and (SUCCESS in buttons or FAILURE in buttons):
        success = SUCCESS in buttons
        reward, terminated = float(success), True
    truncated = (truncated or END_EPISODE in buttons) and not terminated
    return StepOutcome(float(reward), bool(terminated), bool(truncated), success, RERECORD in buttons)

"""One interface for every teleoperation device: `poll() -> TeleopCommand`.

A device is polled once per control step. `action` is in the normalised action box [-1, 1]^7
(same meaning as the environment's action), `engaged` says whether the human is commanding the
robot right now (hold-to-intervene), and `buttons` holds the discrete events of this step.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

import numpy as np

# Discrete events a device can raise (names shared by every device and by the tools).
SUCCESS = "success"  # the operator marks the episode a success
FAILURE = "failure"  # ... or a failure
END_EPISODE = "end_episode"  # stop the episode now (kept, truncated)
RERECORD = "rerecord"  # discard the episode in progress and start again
PAUSE = "pause"  # toggle: hold the robot still, the policy does not act
BUTTONS = frozenset({SUCCESS, FAILURE, END_EPISODE, RERECORD, PAUSE})


@dataclasses.dataclass(frozen=True)
class TeleopCommand:
    """What a device says at one control step."""

    action: np.ndarray  # float32[action_dim], in [-1, 1]
    engaged: bool  # True while the human is in control
    buttons: frozenset[str] = frozenset()


class TeleopDevice(Protocol):
    """A human (or scripted stand-in for one) that can command the robot."""

    def reset(self) -> None:
        """Called at the start of every episode."""

    def poll(self) -> TeleopCommand:
        """The command for the current control step (never blocks for long)."""

    def close(self) -> None:
        """Release the device."""

    # Optional, called only when a device has them:
    #   sync_gripper(value: float) -> None  the gripper command the policy just sent, so taking
    #                                        over never snaps the gripper to a stale value;
    #   show(observation: dict) -> None      a live view of the cameras for the operator.


def idle_command(action_dim: int = 7) -> TeleopCommand:
    """A command that says 'the human is not touching the device'."""
    return TeleopCommand(action=np.zeros(action_dim, np.float32), engaged=False)

"""MuJoCo simulation of a two-finger gripper implementing the robot environment contract.

Importing this package selects headless EGL rendering (`MUJOCO_GL=egl`) unless the caller chose
a backend already. MuJoCo reads the variable when it is first imported, so import this package
(or set MUJOCO_GL yourself) before anything imports mujoco.
"""

import os
import sys
import warnings

if "mujoco" in sys.modules and "MUJOCO_GL" not in os.environ:
    warnings.warn(
        "mujoco was imported before vlarft.robot_io.sim without MUJOCO_GL set; headless rendering "
        "may fail. Set MUJOCO_GL=egl or import vlarft.robot_io.sim first.",
        stacklevel=2,
    )
os.environ.setdefault("MUJOCO_GL", "egl")

from vlarft.robot_io.sim.env import SimConfig, SimRobotEnv  # noqa: E402
from vlarft.robot_io.sim.tasks import TASKS  # noqa: E402

__all__ = ["TASKS", "SimConfig", "SimRobotEnv"]

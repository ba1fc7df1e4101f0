"""Smoke check of a Franka set-up: server reachable, state sane, gripper and cameras working.

    python -m vlarft.robot_io.franka.check --task=pick_place [--server_url=http://172.16.0.1:5000/]
        [--gripper] [--cameras]

Prints the measured state and whether the TCP lies in the task's workspace box; `--gripper`
closes then opens the gripper and prints the measured opening after each; `--cameras` starts the
task's cameras and prints one image's shape per camera. The arm itself is never moved.
Exit status 0 = all checks passed; the last stdout line is a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from vlarft.robot_io.franka.client import FrankaClient, RobotConnectionError
from vlarft.robot_io.task_config import load_task_config

GRIPPER_WAIT_S = 1.5  # time the gripper gets to move before its opening is read


def check(task: str, server_url: str | None = None, gripper: bool = False, cameras: bool = False) -> dict:
    """Runs the checks; returns a summary dict (`ok` = all passed)."""
    config = load_task_config(task, **({"server_url": server_url} if server_url else {}))
    summary: dict = {"server_url": config.server_url, "ok": True}
    with FrankaClient(config.server_url, timeout_s=config.request_timeout_s) as client:
        try:
            state = client.get_state()
        except RobotConnectionError as err:
            print(f"FAIL {err}")
            return {**summary, "ok": False, "error": str(err)}
        in_box = config.workspace.contains(state.position, state.euler)
        print(f"pose xyz {np.round(state.position, 4).tolist()} euler {np.round(state.euler, 3).tolist()}")
        print(f"gripper opening {state.gripper_pos:.3f}  force {np.round(state.force, 2).tolist()}  "
              f"torque {np.round(state.torque, 2).tolist()}")
        print(f"TCP {'inside' if in_box else 'OUTSIDE'} the workspace box of task {config.name!r}")
        summary.update(pose=state.pose.tolist(), gripper=state.gripper_pos, in_workspace=in_box)
        if gripper:
            openings = []
            for command in (client.close_gripper, client.open_gripper):
                command()
                time.sleep(GRIPPER_WAIT_S)
                openings.append(client.get_gripper())
            print(f"gripper opening after close {openings[0]:.3f}, after open {openings[1]:.3f}")
            summary["gripper_ok"] = openings[0] < openings[1]
            summary["ok"] &= summary["gripper_ok"]
    if cameras:
        from vlarft.robot_io.cameras import CameraError, CameraRig

        try:
            with CameraRig(config.cameras) as rig:
                shapes = {name: list(image.shape) for name, image in rig.images().items()}
            print(f"cameras {shapes}")
            summary["cameras"] = shapes
        except CameraError as err:
            print(f"FAIL {err}")
            summary.update(ok=False, camera_error=str(err))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", required=True, help="bundled task name or task TOML path")
    parser.add_argument("--server_url", default=None, help="override the task's server URL")
    parser.add_argument("--gripper", action="store_true", help="close then open the gripper")
    parser.add_argument("--cameras", action="store_true", help="start the cameras and read one image each")
    args = parser.parse_args(argv)
    summary = check(args.task, args.server_url, args.gripper, args.cameras)
    print(json.dumps(summary))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

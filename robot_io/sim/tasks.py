"""Simulated tasks: their objects, randomisation, sparse success and privileged state.

A task contributes MJCF fragments to the scene (`objects_xml` in the world, `attachment_xml` in
the TCP frame of the hand), places its objects at reset (uniform +-`xy_range` in x and y around
a nominal pose), says when it is solved, and exposes privileged object poses for scripted
operators (never part of the observation).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import mujoco
import numpy as np

from vlarft.robot_io.sim.scene import FINGER_INNER_OFFSET, FINGER_NAMES, HAND_INIT_POS, TABLE_TOP


def _in_contact(model: mujoco.MjModel, data: mujoco.MjData, geom_a: str, geom_b: str) -> bool:
    """Whether the two named geoms touch in the current state."""
    a, b = model.geom(geom_a).id, model.geom(geom_b).id
    pairs = data.contact.geom[: data.ncon]
    return bool(np.any(((pairs[:, 0] == a) & (pairs[:, 1] == b)) | ((pairs[:, 0] == b) & (pairs[:, 1] == a))))


@dataclasses.dataclass(frozen=True)
class Task:
    """Base class of a simulated task.

    Attributes:
      nominal_xy: nominal (x, y) of the task object on the table.
      xy_range: half-width of the uniform randomisation of the object's x and y, in metres.
    """

    name: ClassVar[str]
    instruction: ClassVar[str]
    hand_init_pos: ClassVar[tuple[float, float, float]] = HAND_INIT_POS

    nominal_xy: tuple[float, float] = (0.02, 0.0)
    xy_range: float = 0.03

    def objects_xml(self) -> str:
        """MJCF bodies placed in the world body."""
        return ""

    def attachment_xml(self) -> str:
        """MJCF bodies rigidly attached to the hand, in the TCP frame."""
        return ""

    def locked_finger_pos(self) -> float | None:
        """Finger position held whatever the gripper command, or None: the command rules."""
        return None

    def reset(self, model: mujoco.MjModel, data: mujoco.MjData, rng: np.random.Generator) -> None:
        """Place the task objects at a random pose (call `mj_forward` afterwards)."""
        xy = np.asarray(self.nominal_xy) + rng.uniform(-self.xy_range, self.xy_range, size=2)
        self.place(model, data, xy)

    def place(self, model: mujoco.MjModel, data: mujoco.MjData, xy: np.ndarray) -> None:
        """Put the task object at table position `xy`."""
        raise NotImplementedError

    def is_success(self, model: mujoco.MjModel, data: mujoco.MjData) -> bool:
        """The sparse success criterion."""
        raise NotImplementedError

    def privileged_state(self, model: mujoco.MjModel, data: mujoco.MjData) -> dict[str, np.ndarray]:
        """Ground-truth object poses (for scripted operators and tests only)."""
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class PickCube(Task):
    """Lift a red cube off the table and hold it.

    Attributes:
      cube_half: half edge of the cube, m.
      cube_mass: kg.
      lift_height: success needs the cube's bottom this far above the table, m, while both
        fingers touch it.
    """

    name: ClassVar[str] = "pick_cube"
    instruction: ClassVar[str] = "pick up the red cube"

    cube_half: float = 0.02
    cube_mass: float = 0.05
    lift_height: float = 0.05

    def objects_xml(self) -> str:
        h = self.cube_half
        return f"""
    <body name="cube" pos="{self.nominal_xy[0]} {self.nominal_xy[1]} {TABLE_TOP + h}">
      <freejoint name="cube_free"/>
      <geom name="cube" type="box" size="{h} {h} {h}" mass="{self.cube_mass}" condim="4"
            friction="1.2 0.01 0.0005" rgba="0.85 0.12 0.1 1"/>
    </body>"""

    def place(self, model, data, xy) -> None:
        data.joint("cube_free").qpos[:] = [xy[0], xy[1], TABLE_TOP + self.cube_half, 1, 0, 0, 0]
        data.joint("cube_free").qvel[:] = 0.0

    def is_success(self, model, data) -> bool:
        lifted = data.body("cube").xpos[2] - self.cube_half - TABLE_TOP > self.lift_height
        return bool(lifted and all(_in_contact(model, data, f, "cube") for f in FINGER_NAMES))

    def privileged_state(self, model, data) -> dict[str, np.ndarray]:
        return {
            "cube_pos": data.body("cube").xpos.copy(),
            "cube_quat": data.body("cube").xquat.copy(),
            "cube_half": np.float64(self.cube_half),
        }


@dataclasses.dataclass(frozen=True)
class InsertPeg(Task):
    """Insert a peg held in the gripper into the square hole of a fixture.

    The peg (a capsule, so its tip is rounded) is rigidly attached to the hand: an idealised
    firm grasp. The fingers stay closed on it and gripper commands are ignored.

    Attributes:
      peg_radius: m.
      peg_below_tcp: how far the peg tip sits below the TCP, m.
      hole_half: half width of the square hole, m (clearance = hole_half - peg_radius per side).
      fixture_half: half width of the fixture block, m.
      fixture_height: m; the hole goes through it down to the table.
      success_depth: success needs the peg tip this far below the fixture top, m ...
      success_xy_tol: ... and within this distance of the hole axis, m.
    """

    name: ClassVar[str] = "insert_peg"
    instruction: ClassVar[str] = "insert the peg into the hole"

    peg_radius: float = 0.0095
    peg_below_tcp: float = 0.06
    hole_half: float = 0.011
    fixture_half: float = 0.04
    fixture_height: float = 0.04
    success_depth: float = 0.025
    success_xy_tol: float = 0.003

    def attachment_xml(self) -> str:
        r, tip = self.peg_radius, self.peg_below_tcp
        return f"""
          <body name="peg" gravcomp="1">
            <geom name="peg" type="capsule" fromto="0 0 0.03 0 0 {-(tip - r):g}" size="{r}"
                  mass="0.02" friction="0.5 0.005 0.0001" rgba="0.95 0.75 0.1 1"/>
            <site name="peg_tip" pos="0 0 {-tip:g}" size="0.002" rgba="1 0 0 0" group="3"/>
          </body>"""

    def locked_finger_pos(self) -> float | None:
        return self.peg_radius - FINGER_INNER_OFFSET  # fingers resting on the peg

    def _walls_xml(self) -> str:
        a, b, hz = self.hole_half, self.fixture_half, self.fixture_height / 2
        mid, half = (a + b) / 2, (b - a) / 2
        boxes = [((mid, 0), (half, b)), ((-mid, 0), (half, b)), ((0, mid), (a, half)), ((0, -mid), (a, half))]
        return "\n".join(
            f'      <geom name="fixture_wall{i}" type="box" size="{sx:g} {sy:g} {hz:g}" pos="{x:g} {y:g} {hz:g}"'
            ' rgba="0.25 0.4 0.7 1"/>'
            for i, ((x, y), (sx, sy)) in enumerate(boxes)
        )

    def objects_xml(self) -> str:
        return f"""
    <body name="fixture" pos="{self.nominal_xy[0]} {self.nominal_xy[1]} {TABLE_TOP}">
{self._walls_xml()}
      <site name="hole_top" pos="0 0 {self.fixture_height:g}" size="0.002" rgba="0 1 0 0" group="3"/>
    </body>"""

    def place(self, model, data, xy) -> None:
        # The fixture is a static body: move it in the model (deterministic, reset every episode).
        model.body("fixture").pos[:2] = xy

    def _tip_offset(self, data) -> tuple[float, float]:
        """(depth of the peg tip below the fixture top, xy distance of the tip to the hole axis)."""
        tip, hole = data.site("peg_tip").xpos, data.site("hole_top").xpos
        return float(hole[2] - tip[2]), float(np.linalg.norm(tip[:2] - hole[:2]))

    def is_success(self, model, data) -> bool:
        depth, off_axis = self._tip_offset(data)
        return depth >= self.success_depth and off_axis <= self.success_xy_tol

    def privileged_state(self, model, data) -> dict[str, np.ndarray]:
        return {
            "peg_tip_pos": data.site("peg_tip").xpos.copy(),
            "hole_top_pos": data.site("hole_top").xpos.copy(),
            "hole_half": np.float64(self.hole_half),
            "peg_radius": np.float64(self.peg_radius),
        }


TASKS: dict[str, type[Task]] = {t.name: t for t in (PickCube, InsertPeg)}


def make_task(name: str) -> Task:
    """The task called `name` with default parameters."""
    if name not in TASKS:
        raise ValueError(f"unknown sim task {name!r}; known: {sorted(TASKS)}")
    return TASKS[name]()


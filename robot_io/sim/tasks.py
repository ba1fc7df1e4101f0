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

    def finger_pos_holding_at_reset(self) -> float | None:
        """Finger position (closed on an object the hand holds when the episode starts; the
        gripper is then commanded closed), or None: the episode starts with the gripper open."""
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
            "cube_grasped": np.float64(all(_in_contact(model, data, f, "cube") for f in FINGER_NAMES)),
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
      xy_range: the fixture is placed within +-5 cm of `nominal_xy` (wider than the cube's +-3 cm:
        at +-3 cm SFT from 20 demos already reached ~65%, leaving little for RL to show).
    """

    name: ClassVar[str] = "insert_peg"
    instruction: ClassVar[str] = "insert the peg into the hole"

    xy_range: float = 0.05

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


def _yaw_quat(yaw: float) -> np.ndarray:
    """MuJoCo quaternion (w, x, y, z) of a rotation by `yaw` about the world z axis."""
    return np.array([np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])


@dataclasses.dataclass(frozen=True)
class HangRing(Task):
    """Hang a ring held by its knob over a post and let go (the paper's hang-knot / insert-wheel tasks).

    The ring (a torus of capsule segments) has a short stem from its rim to a knob, an upright
    cylinder on the ring's +x axis. The episode starts with the knob between the closed fingers
    (held above the ring's tube) and the ring hanging off it, turned by a random yaw in the hand;
    the gripper must bring the ring's hole over the post (a round-topped capsule on a base disc,
    at `nominal_xy` +- `xy_range`), lower the ring down the post and open. A dropped ring can be
    picked up again by its knob (the scripted operator does).

    Success (physically: the ring is threaded on the post and released): no finger touches the
    ring, the post's axis passes through the ring's hole (where the axis crosses the ring's plane
    it is inside `inner_radius`) and that crossing lies at least `success_depth` below the top
    of the post.

    Attributes:
      ring_radius: radius of the ring's centre line, m.
      tube_radius: radius of the ring's tube, m.
      segments: capsules approximating the torus.
      knob_radius / knob_height: the knob cylinder, m (its bottom is level with the tube's).
      knob_gap: gap between the tube and the knob, bridged by the stem, m.
      grasp_below_knob_top: the TCP's depth below the knob's top in the initial grasp, m.
      ring_mass: kg, ring, stem and knob together.
      post_radius: m (radial clearance = `inner_radius` - post_radius, 7 mm by default).
      post_height: height of the post's top above the table, m.
      base_radius / base_height: the disc the post stands on, m.
      success_depth: see above, m.
      ring_yaw_range: the ring's yaw in the hand, uniform in +-this, rad.
      grasp_range: the knob's offset in the fingers (along the hand's x and z), uniform in
        +-this, m.
    """

    name: ClassVar[str] = "hang_ring"
    instruction: ClassVar[str] = "hang the ring on the post"
    hand_init_pos: ClassVar[tuple[float, float, float]] = (-0.03, -0.05, 0.14)

    nominal_xy: tuple[float, float] = (0.05, 0.05)
    xy_range: float = 0.04
    ring_radius: float = 0.03
    tube_radius: float = 0.006
    segments: int = 12
    knob_radius: float = 0.01
    knob_height: float = 0.05
    knob_gap: float = 0.004
    grasp_below_knob_top: float = 0.015
    ring_mass: float = 0.025
    post_radius: float = 0.016
    post_height: float = 0.06
    base_radius: float = 0.035
    base_height: float = 0.004
    success_depth: float = 0.02
    ring_yaw_range: float = 0.6
    grasp_range: float = 0.004

    @property
    def inner_radius(self) -> float:
        """Radius of the ring's hole where it is narrowest (the middle of a segment), m."""
        return self.ring_radius * np.cos(np.pi / self.segments) - self.tube_radius

    @property
    def knob_offset(self) -> float:
        """Distance of the knob's axis from the ring's centre, m."""
        return self.ring_radius + self.tube_radius + self.knob_gap + self.knob_radius

    def _ring_geoms_xml(self) -> str:
        angles = np.linspace(0.0, 2 * np.pi, self.segments + 1)
        points = self.ring_radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
        mass = self.ring_mass / (self.segments + 2)  # per segment; the knob weighs two
        tubes = "\n".join(
            f'      <geom name="ring{i}" type="capsule" fromto="{a[0]:.5f} {a[1]:.5f} 0 {b[0]:.5f} {b[1]:.5f} 0"'
            f' size="{self.tube_radius:g}" mass="{mass:g}" rgba="0.15 0.65 0.3 1"/>'
            for i, (a, b) in enumerate(zip(points[:-1], points[1:]))
        )
        stem_half = (self.knob_offset - self.ring_radius) / 2
        knob_half = self.knob_height / 2
        return f"""{tubes}
      <geom name="ring_stem" type="box" size="{stem_half:g} 0.004 0.004" pos="{self.ring_radius + stem_half:g} 0 0"
            mass="0" rgba="0.15 0.65 0.3 1"/>
      <geom name="ring_knob" type="cylinder" size="{self.knob_radius:g} {knob_half:g}"
            pos="{self.knob_offset:g} 0 {knob_half - self.tube_radius:g}" mass="{2 * mass:g}" condim="4"
            friction="1.2 0.01 0.0005" rgba="0.1 0.45 0.2 1"/>"""

    @property
    def _grasp_height(self) -> float:
        """Height of the knob's grasp point above the ring's plane, m."""
        return self.knob_height - self.tube_radius - self.grasp_below_knob_top

    def objects_xml(self) -> str:
        r, h = self.post_radius, self.post_height
        return f"""
    <body name="post" pos="{self.nominal_xy[0]} {self.nominal_xy[1]} {TABLE_TOP}">
      <geom name="post_base" type="cylinder" size="{self.base_radius:g} {self.base_height / 2:g}"
            pos="0 0 {self.base_height / 2:g}" rgba="0.35 0.3 0.6 1"/>
      <geom name="post" type="capsule" fromto="0 0 0 0 0 {h - r:g}" size="{r:g}" rgba="0.55 0.5 0.85 1"/>
      <site name="post_top" pos="0 0 {h:g}" size="0.002" rgba="0 1 0 0" group="3"/>
    </body>
    <body name="ring" pos="0 0 {TABLE_TOP + self.tube_radius:g}">
      <freejoint name="ring_free"/>
{self._ring_geoms_xml()}
      <site name="ring_knob_grasp" pos="{self.knob_offset:g} 0 {self._grasp_height:g}" size="0.002" rgba="1 0 0 0"
            group="3"/>
    </body>"""

    def reset(self, model, data, rng) -> None:
        super().reset(model, data, rng)  # the post
        yaw = rng.uniform(-self.ring_yaw_range, self.ring_yaw_range)
        along_fingers, down = rng.uniform(-self.grasp_range, self.grasp_range, size=2)
        knob = np.asarray(self.hand_init_pos) + [along_fingers, 0.0, down - self._grasp_height]
        centre = knob - self.knob_offset * np.array([np.cos(yaw), np.sin(yaw), 0.0])
        data.joint("ring_free").qpos[:] = [*centre, *_yaw_quat(yaw)]
        data.joint("ring_free").qvel[:] = 0.0

    def finger_pos_holding_at_reset(self) -> float:
        return self.knob_radius - FINGER_INNER_OFFSET

    def place(self, model, data, xy) -> None:
        model.body("post").pos[:2] = xy  # a static body: moved in the model, like the peg's fixture

    def _fingers_touching_ring(self, model, data) -> int:
        """How many fingers touch the ring (its tube, stem or knob)."""
        bodies = model.geom_bodyid[data.contact.geom[: data.ncon]]
        ring = model.body("ring").id
        touching = set(bodies[bodies[:, 1] == ring, 0]) | set(bodies[bodies[:, 0] == ring, 1])
        return sum(model.body(name).id in touching for name in FINGER_NAMES)

    def _post_axis_crossing(self, ring_pos: np.ndarray, ring_normal: np.ndarray, post_top: np.ndarray):
        """(distance from the ring's centre to where the post axis crosses the ring's plane, how far
        that crossing lies below the post's top), m; (inf, -inf) when the ring stands on edge."""
        if abs(ring_normal[2]) < 0.5:
            return np.inf, -np.inf
        offset = post_top[:2] - ring_pos[:2]
        crossing_z = ring_pos[2] - float(ring_normal[:2] @ offset) / ring_normal[2]
        crossing = np.array([post_top[0], post_top[1], crossing_z])
        return float(np.linalg.norm(crossing - ring_pos)), float(post_top[2] - crossing_z)

    def is_success(self, model, data) -> bool:
        ring_normal = data.body("ring").xmat.reshape(3, 3)[:, 2]
        off_axis, depth = self._post_axis_crossing(data.body("ring").xpos, ring_normal, data.site("post_top").xpos)
        threaded = off_axis < self.inner_radius and depth >= self.success_depth
        return bool(threaded and self._fingers_touching_ring(model, data) == 0)

    def privileged_state(self, model, data) -> dict[str, np.ndarray]:
        return {
            "ring_pos": data.body("ring").xpos.copy(),
            "ring_normal": data.body("ring").xmat.reshape(3, 3)[:, 2].copy(),
            "knob_grasp_pos": data.site("ring_knob_grasp").xpos.copy(),
            "ring_grasped": np.float64(self._fingers_touching_ring(model, data) == len(FINGER_NAMES)),
            "post_top_pos": data.site("post_top").xpos.copy(),
            "inner_radius": np.float64(self.inner_radius),
            "post_radius": np.float64(self.post_radius),
            "tube_radius": np.float64(self.tube_radius),
        }


TASKS: dict[str, type[Task]] = {t.name: t for t in (PickCube, InsertPeg, HangRing)}


def make_task(name: str) -> Task:
    """The task called `name` with default parameters."""
    if name not in TASKS:
        raise ValueError(f"unknown sim task {name!r}; known: {sorted(TASKS)}")
    return TASKS[name]()


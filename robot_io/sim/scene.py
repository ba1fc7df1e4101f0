"""The MJCF of the simulated scene: a table and a floating two-finger gripper, primitives only.

Frames and names the rest of the simulator relies on:
  * the table top is the plane z = `TABLE_TOP` (= 0), the workspace sits around the origin;
  * `hand` is a free body welded (equality `hand_weld`) to the mocap body `hand_target`; the hand
    frame's origin IS the tool centre point (TCP, site `tcp`, between the fingertips) and its
    z axis points up, so an upright gripper has Euler angles (0, 0, 0);
  * `gripper` is a rigid child of `hand` mounted at the `flange` site, where the force/torque
    sensors `ft_force` / `ft_torque` measure the wrench the hand exerts on everything below the
    flange (fingers, grasped or attached objects, contacts);
  * fingers `finger_l` / `finger_r` slide along the hand's +y / -y axis from 0 (closed) to
    `FINGER_TRAVEL` (open), each driven by a position actuator of the same name; a finger's inner
    face sits at |y| = `FINGER_INNER_OFFSET` + q (fingers do not collide with bodies rigidly
    attached to the hand: MuJoCo filters contacts between a body and its parent);
  * cameras: `front` (fixed, looking at the workspace) and `wrist` (on the gripper, looking down
    past the fingers).

Rendering is kept cheap for CPU/Mesa: no meshes, textures or skybox (two plain walls instead),
no shadows, reflections or multisampling, and an offscreen buffer exactly the size of the images.
"""

from __future__ import annotations

import dataclasses

import numpy as np

TABLE_TOP = 0.0
FINGER_TRAVEL = 0.04  # m, per finger: the gap between the fingers opens to ~2 * FINGER_TRAVEL
FINGER_NAMES = ("finger_l", "finger_r")
FINGER_INNER_OFFSET = 0.001  # m, a finger's inner face is this far from the hand's xz plane at q=0
FLANGE_HEIGHT = 0.115  # m, flange above the TCP
CAMERAS = ("front", "wrist")
HAND_INIT_POS = (-0.08, 0.0, 0.2)  # default initial TCP position, m

# Contacts are stiff (time constant 2 physics steps) and the hand weld much softer (and, with
# `torquescale`, stiffer in rotation than in translation), so that a hand pressed onto an obstacle
# behaves like an impedance-controlled arm: forces of tens of newtons, sub-millimetre penetration.
# The hand is light (~0.3 kg, gravity-compensated) so the weld tracks its target closely.
_CONTACT_SOLREF = "0.004 1"
_WELD_SOLREF = "0.03 1"
_WELD_TORQUESCALE = 5
_FRONT_CAM_POS = (0.3, 0.16, 0.3)
_FRONT_CAM_TARGET = (-0.03, 0.0, 0.09)


@dataclasses.dataclass(frozen=True)
class SceneConfig:
    """Scene parameters.

    Attributes:
      image_size: (height, width) of both camera images; also the offscreen buffer size.
      timestep: physics time step in seconds (2 ms keeps the 1.5 mm peg clearance stable).
      hand_init_pos: initial TCP position (the mocap target starts there too).
      objects_xml: task bodies placed in the world body.
      attachment_xml: task bodies rigidly attached to the hand, expressed in the TCP frame.
    """

    image_size: tuple[int, int] = (128, 128)
    timestep: float = 0.002
    hand_init_pos: tuple[float, float, float] = HAND_INIT_POS
    objects_xml: str = ""
    attachment_xml: str = ""


def look_at_xyaxes(pos, target, up=(0.0, 0.0, 1.0)) -> str:
    """MJCF `xyaxes` of a camera at `pos` looking at `target` (same frame), image up ~ `up`."""
    forward = np.asarray(target, float) - np.asarray(pos, float)
    forward /= np.linalg.norm(forward)
    x_axis = np.cross(forward, up)
    x_axis /= np.linalg.norm(x_axis)
    y_axis = np.cross(-forward, x_axis)
    return " ".join(f"{v:.5f}" for v in (*x_axis, *y_axis))


def _fmt(values) -> str:
    return " ".join(f"{v:g}" for v in values)


def _header_xml(cfg: SceneConfig) -> str:
    height, width = cfg.image_size
    return f"""
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{cfg.timestep:g}" integrator="implicitfast" cone="elliptic" impratio="5"/>
  <statistic extent="1" center="0 0 0.1"/>
  <visual>
    <global offwidth="{width}" offheight="{height}" fovy="45"/>
    <quality shadowsize="0" offsamples="0"/>
    <headlight ambient="0.35 0.35 0.35" diffuse="0.45 0.45 0.45" specular="0 0 0"/>
    <map znear="0.01" zfar="20"/>
  </visual>
  <default>
    <geom solref="{_CONTACT_SOLREF}" friction="1 0.005 0.0001"/>
    <default class="visual">
      <geom contype="0" conaffinity="0" group="1" mass="0"/>
    </default>
  </default>"""


def _table_xml() -> str:
    legs = "\n".join(
        f'    <geom class="visual" type="cylinder" size="0.025 0.37" pos="{x} {y} -0.41"'
        ' rgba="0.3 0.22 0.15 1"/>'
        for x in (-0.33, 0.33)
        for y in (-0.38, 0.38)
    )
    return f"""
    <light name="sun" directional="true" pos="0 0 2" dir="-0.3 0.2 -1" diffuse="0.5 0.5 0.5"
           castshadow="false"/>
    <geom name="floor" type="plane" size="2 2 0.1" pos="0 0 -0.78" rgba="0.35 0.36 0.38 1"/>
    <geom class="visual" type="plane" size="2 1.5 0.1" pos="-0.9 0 0" zaxis="1 0 0"
          rgba="0.55 0.6 0.66 1"/>
    <geom class="visual" type="plane" size="2 1.5 0.1" pos="0 -1.0 0" zaxis="0 1 0"
          rgba="0.5 0.55 0.6 1"/>
    <geom name="table" type="box" size="0.38 0.43 0.02" pos="0 0 {TABLE_TOP - 0.02:g}"
          rgba="0.62 0.5 0.36 1"/>
{legs}
    <camera name="front" pos="{_fmt(_FRONT_CAM_POS)}" fovy="55"
            xyaxes="{look_at_xyaxes(_FRONT_CAM_POS, _FRONT_CAM_TARGET)}"/>"""


def _finger_xml(name: str, side: int) -> str:
    """One finger: a slide joint along `side` * y and a box (plus a dark pad near the tip)."""
    return f"""
        <body name="{name}" pos="0 0 {0.0285 - FLANGE_HEIGHT:g}" gravcomp="1">
          <joint name="{name}" type="slide" axis="0 {side} 0" range="0 {FINGER_TRAVEL:g}"
                 damping="8" armature="0.01"/>
          <geom name="{name}" type="box" size="0.011 0.006 0.0385"
                pos="0 {side * (FINGER_INNER_OFFSET + 0.006):g} 0"
                mass="0.03" friction="1.5 0.01 0.0005" rgba="0.25 0.25 0.28 1"/>
          <geom class="visual" type="box" size="0.0112 0.0012 0.012" pos="0 {side * 0.0008:g} -0.024"
                rgba="0.1 0.1 0.1 1"/>
        </body>"""


def _hand_xml(cfg: SceneConfig) -> str:
    """The mocap target, the welded free hand, the gripper with fingers and the wrist camera."""
    pos = _fmt(cfg.hand_init_pos)
    cam_pos = (-0.055, 0.0, 0.0)  # in the gripper frame: behind the palm, 11.5 cm above the TCP
    cam_target = (0.0, 0.0, -FLANGE_HEIGHT - 0.03)
    cam_axes = look_at_xyaxes(cam_pos, cam_target, up=(1.0, 0.0, 0.0))
    fingers = _finger_xml("finger_l", 1) + _finger_xml("finger_r", -1)
    return f"""
    <body name="hand_target" mocap="true" pos="{pos}"/>
    <body name="hand" pos="{pos}" gravcomp="1">
      <freejoint name="hand_free"/>
      <geom name="wrist_link" type="cylinder" size="0.03 0.03" pos="0 0 {FLANGE_HEIGHT + 0.03:g}"
            mass="0.1" rgba="0.2 0.2 0.22 1"/>
      <geom class="visual" type="cylinder" size="0.036 0.006" pos="0 0 {FLANGE_HEIGHT + 0.006:g}"
            rgba="0.75 0.75 0.78 1"/>
      <body name="gripper" pos="0 0 {FLANGE_HEIGHT:g}" gravcomp="1">
        <site name="flange" size="0.006" rgba="0.9 0.9 0.2 0" group="3"/>
        <site name="tcp" pos="0 0 {-FLANGE_HEIGHT:g}" size="0.004" rgba="1 0 0 0" group="3"/>
        <geom name="palm" type="box" size="0.022 0.058 0.02" pos="0 0 -0.028" mass="0.12"
              rgba="0.86 0.86 0.88 1"/>
        <geom class="visual" type="box" size="0.01 0.012 0.012" pos="-0.052 0 0.013"
              rgba="0.15 0.15 0.15 1"/>
        <camera name="wrist" pos="{_fmt(cam_pos)}" fovy="75" xyaxes="{cam_axes}"/>
{fingers}
        <body name="tcp_frame" pos="0 0 {-FLANGE_HEIGHT:g}" gravcomp="1">
{cfg.attachment_xml}
        </body>
      </body>
    </body>"""


def _actuator_sensor_equality_xml() -> str:
    actuators = "\n".join(
        f'    <position name="{n}" joint="{n}" kp="400" ctrlrange="0 {FINGER_TRAVEL:g}"'
        ' forcerange="-15 15"/>'
        for n in FINGER_NAMES
    )
    return f"""
  <equality>
    <weld name="hand_weld" body1="hand_target" body2="hand" relpose="0 0 0 1 0 0 0"
          solref="{_WELD_SOLREF}" torquescale="{_WELD_TORQUESCALE}"/>
  </equality>
  <actuator>
{actuators}
  </actuator>
  <sensor>
    <force name="ft_force" site="flange"/>
    <torque name="ft_torque" site="flange"/>
  </sensor>"""


def build_mjcf(cfg: SceneConfig) -> str:
    """The complete MJCF document of the scene."""
    return f"""<mujoco model="vlarft_sim_gripper">{_header_xml(cfg)}
  <worldbody>{_table_xml()}{_hand_xml(cfg)}
{cfg.objects_xml}
  </worldbody>{_actuator_sensor_equality_xml()}
</mujoco>
"""

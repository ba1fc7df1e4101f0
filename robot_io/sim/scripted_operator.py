"""A scripted stand-in for a human with a SpaceMouse, driving the simulator from privileged state.

Per task, a waypoint script (a generator yielding intended actions) reads the ground-truth
object poses from `env.unwrapped.privileged_state()`. On top of it the operator behaves like a
person: noisy commands, imperfect alignment (an aiming error per attempt that shrinks with every
attempt), occasional hesitation (a few near-still steps) and, in some episodes, a deliberate
regrasp / re-try. Its randomness comes only from its own seed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Generator, Iterator

import numpy as np

from vlarft.robot_io.contract import ACTION_DIM
from vlarft.robot_io.teleop.base import TeleopCommand

OPEN, CLOSED = -1.0, 1.0
Script = Iterator[np.ndarray]


@dataclasses.dataclass(frozen=True)
class OperatorKnobs:
    """How imperfect the operator is (`noise_free()` gives the optimal, deterministic expert).

    Attributes:
      noise: std of the translation noise per axis, relative to (0.25 + |command|).
      rot_noise: std of the rotation noise, in normalised action units.
      hesitation_prob: per-step probability to start hesitating.
      hesitation_steps: (min, max) length of a hesitation, steps.
      aim_error: std of the x/y aiming error of a first attempt, m (halved every new attempt).
      retry_prob: probability that an episode contains one deliberate regrasp / re-try.
      gain: proportional gain from position error to command (1 = reach it in one step).
      max_speed: largest translation command while moving freely.
    """

    noise: float = 0.12
    rot_noise: float = 0.05
    hesitation_prob: float = 0.07
    hesitation_steps: tuple[int, int] = (2, 4)
    aim_error: float = 0.005
    retry_prob: float = 0.35
    gain: float = 0.7
    max_speed: float = 0.75

    @classmethod
    def noise_free(cls) -> OperatorKnobs:
        """A perfect operator: no noise, hesitation, aiming error or re-tries, full speed."""
        return cls(
            noise=0.0, rot_noise=0.0, hesitation_prob=0.0, aim_error=0.0, retry_prob=0.0, gain=0.9, max_speed=1.0
        )


class ScriptedOperator:
    """TeleopDevice that solves the env's task from privileged state; always engaged."""

    def __init__(self, env, seed: int = 0, knobs: OperatorKnobs | None = None, **overrides):
        self.env = env.unwrapped
        self.knobs = dataclasses.replace(knobs or OperatorKnobs(), **overrides)
        task = self.env.task.name
        if task not in _SCRIPTS:
            raise ValueError(f"no operator script for task {task!r}; known: {sorted(_SCRIPTS)}")
        self._script_fn = _SCRIPTS[task]
        self._rng = np.random.default_rng(seed)
        self._script: Script | None = None
        self._hesitation_left = 0
        self._gripper = OPEN
        self._retry_left = False

    # --- TeleopDevice ------------------------------------------------------------------------

    def reset(self) -> None:
        """Start a new episode: a fresh script, and decide whether it will contain a re-try."""
        self._script = self._script_fn(self)
        self._hesitation_left = 0
        self._gripper = CLOSED if self.state()["gripper_opening"] < 0.5 else OPEN  # as the gripper is now
        self._retry_left = bool(self._rng.random() < self.knobs.retry_prob)

    def poll(self) -> TeleopCommand:
        """The operator's command for this control step."""
        if self._script is None:
            self.reset()
        if self._starts_or_continues_hesitation():
            action = self._hesitation_action()
        else:
            action = self._humanised(next(self._script))
        return TeleopCommand(action=np.clip(action, -1.0, 1.0).astype(np.float32), engaged=True)

    def close(self) -> None:
        """Nothing to release."""

    # --- behaviour ---------------------------------------------------------------------------

    def _starts_or_continues_hesitation(self) -> bool:
        if self._hesitation_left == 0 and self._rng.random() < self.knobs.hesitation_prob:
            low, high = self.knobs.hesitation_steps
            self._hesitation_left = int(self._rng.integers(low, high + 1))
        if self._hesitation_left > 0:
            self._hesitation_left -= 1
            return True
        return False

    def _hesitation_action(self) -> np.ndarray:
        action = np.zeros(ACTION_DIM)
        action[:6] = self._rng.normal(0.0, 0.02, size=6)
        action[6] = self._gripper
        return action

    def _humanised(self, action: np.ndarray) -> np.ndarray:
        k = self.knobs
        action = action.copy()
        action[:3] += self._rng.normal(0.0, 1.0, size=3) * k.noise * (0.25 + np.abs(action[:3]))
        action[3:6] += self._rng.normal(0.0, k.rot_noise, size=3)
        self._gripper = action[6]
        return action

    def take_retry(self) -> bool:
        """True once per episode (if this episode was chosen for a deliberate re-try)."""
        retry, self._retry_left = self._retry_left, False
        return retry

    def aim_offset(self, attempt: int) -> np.ndarray:
        """The x/y aiming error of an attempt (1-based): it halves with every new attempt."""
        return self._rng.normal(0.0, self.knobs.aim_error * 0.5 ** (attempt - 1), size=2)

    # --- primitives used by the scripts --------------------------------------------------------

    def state(self) -> dict[str, np.ndarray]:
        """Privileged state of the env right now."""
        return self.env.privileged_state()

    def command(self, error: np.ndarray, gripper: float, speed: float | None = None) -> np.ndarray:
        """Action reducing the TCP position error `error` (m), keeping the gripper upright."""
        cfg, k = self.env.config, self.knobs
        speed = k.max_speed if speed is None else speed
        action = np.zeros(ACTION_DIM)
        action[:3] = np.clip(error / cfg.pos_scale * k.gain, -speed, speed)
        action[3:6] = np.clip(-0.5 * self.state()["tcp_euler"] / cfg.rot_scale, -1.0, 1.0)
        action[6] = gripper
        return action

    def move(
        self,
        goal: Callable[[dict], np.ndarray],
        gripper: float,
        tol: float,
        point: str = "tcp_pos",
        speed: float | None = None,
        max_steps: int = 30,
    ) -> Iterator[np.ndarray]:
        """Drive the privileged `point` to `goal(state)` within `tol` (returns early if stuck)."""
        for _ in range(max_steps):
            state = self.state()
            error = goal(state) - state[point]
            if np.linalg.norm(error) < tol:
                return
            yield self.command(error, gripper, speed)

    def hold(self, gripper: float, steps: int) -> Iterator[np.ndarray]:
        """Keep still for `steps` steps with the gripper commanded to `gripper`."""
        for _ in range(steps):
            yield self.command(np.zeros(3), gripper)


def _offset(key: str, xy: np.ndarray, dz: float) -> Callable[[dict], np.ndarray]:
    """Goal function: the privileged point `key` shifted by (xy, dz)."""
    shift = np.array([xy[0], xy[1], dz])
    return lambda state: state[key] + shift


def _grasp(op: ScriptedOperator, key: str, aim: np.ndarray) -> Generator[np.ndarray, None, bool]:
    """Hover over the privileged point `key` (+ the aiming error), come down to it with the
    fingers open and close. In an episode chosen for a re-try the operator is not happy with the
    grasp: lets go and backs off. Returns whether the grasp was kept."""
    yield from op.move(_offset(key, aim, 0.07), OPEN, tol=0.015)
    yield from op.move(_offset(key, aim, 0.0), OPEN, tol=0.006, speed=0.6, max_steps=12)
    yield from op.hold(CLOSED, steps=3)
    if op.take_retry():
        yield from op.hold(OPEN, steps=2)
        yield from op.move(_offset("tcp_pos", np.zeros(2), 0.05), OPEN, tol=0.01, max_steps=4)
        return False
    return True


def _pick_cube_script(op: ScriptedOperator) -> Script:
    """Hover above the cube, descend, close, lift; open and re-try if the cube did not come. A
    cube already held (an operator taking over from a policy that grasped it) is lifted at once."""
    attempt = 0
    while True:
        attempt += 1
        aim = op.aim_offset(attempt)
        held = bool(op.state()["cube_grasped"])
        if not held and not (yield from _grasp(op, "cube_pos", aim)):
            continue
        lift_xy = op.state()["tcp_pos"][:2]
        yield from op.move(lambda s: np.array([*lift_xy, 0.14]), CLOSED, tol=0.01, speed=0.8, max_steps=12)
        yield from op.hold(CLOSED, steps=3)  # the env ends the episode on success
        yield from op.hold(OPEN, steps=2)  # the cube did not come: let go and start over
        yield from op.move(_offset("tcp_pos", np.zeros(2), 0.04), OPEN, tol=0.01, max_steps=3)


def _descend_along_axis(op: ScriptedOperator, aim: np.ndarray, point: str, axis_top: str, stop_depth: float,
                        step_down: float, align_tol: float = np.inf) -> Script:
    """Push the held `point` down the vertical axis through `axis_top` (aiming `aim` off it) while
    centring it, pausing the descent while it is more than `align_tol` off; return once it is
    `stop_depth` below `axis_top`, or when stuck for 3 steps."""
    best_depth, no_progress = -np.inf, 0
    while no_progress < 3:
        state = op.state()
        depth = state[axis_top][2] - state[point][2]
        if depth > stop_depth:
            return
        xy_error = state[axis_top][:2] + aim - state[point][:2]
        aligned = np.linalg.norm(xy_error) <= align_tol
        no_progress = 0 if depth > best_depth + 0.002 or not aligned else no_progress + 1
        best_depth = max(best_depth, depth)
        yield op.command(np.array([*xy_error, -step_down if aligned else 0.0]), CLOSED, speed=0.6)


def _insert_peg_script(op: ScriptedOperator) -> Script:
    """Hover over the hole, descend with xy corrections; back off and re-aim when stuck."""
    attempt = 0
    while True:
        attempt += 1
        aim = op.aim_offset(attempt)
        retry = op.take_retry()
        yield from op.move(_offset("hole_top_pos", aim, 0.02), CLOSED, tol=0.006, point="peg_tip_pos")
        # down the hole until stuck on the rim (or success); with a re-try, only half in
        yield from _descend_along_axis(op, aim, "peg_tip_pos", "hole_top_pos", 0.012 if retry else np.inf, 0.01)
        yield from op.move(_offset("hole_top_pos", aim, 0.025), CLOSED, tol=0.01, point="peg_tip_pos", max_steps=4)


def _ring_held(state: dict) -> bool:
    """Both fingers touch the ring."""
    return bool(state["ring_grasped"])


def _ring_held_steady(op: ScriptedOperator) -> Callable[[dict], bool]:
    """Condition: the ring is held and has not turned by more than ~10 degrees since now (a ring
    caught on the post's top tilts in the fingers)."""
    normal = op.state()["ring_normal"]
    return lambda state: _ring_held(state) and float(state["ring_normal"] @ normal) > 0.985


def _while(op: ScriptedOperator, condition: Callable[[dict], bool], script: Script) -> Script:
    """`script`, cut short as soon as `condition(state)` no longer holds."""
    for action in script:
        if not condition(op.state()):
            return
        yield action


def _grasp_ring_knob(op: ScriptedOperator, aim: np.ndarray) -> Script:
    """Come down around the knob, close and lift the ring above the post's height."""
    if not (yield from _grasp(op, "knob_grasp_pos", aim)):
        return
    yield from op.move(lambda s: np.array([*s["tcp_pos"][:2], s["post_top_pos"][2] + 0.03]), CLOSED, tol=0.01,
                       speed=0.8, max_steps=8)


def _hang_ring_script(op: ScriptedOperator) -> Script:
    """Carry the held ring's hole over the post, lower it down the post and let go; lift and re-aim
    when the ring catches on the post's top; let go of a ring that turned far in the hand and pick
    it up again by its knob, like a dropped one."""
    attempt = 0
    while True:
        attempt += 1
        aim = op.aim_offset(attempt)
        state = op.state()
        if not _ring_held(state):
            yield from _grasp_ring_knob(op, aim)
            continue
        if state["ring_normal"][2] < 0.87:  # turned more than 30 degrees in the hand: grasp it afresh
            yield from op.hold(OPEN, steps=2)
            yield from op.move(_offset("tcp_pos", np.zeros(2), 0.05), OPEN, tol=0.01, max_steps=3)
            continue
        clear = op.env.task.tube_radius + 0.015  # the ring's bottom this far above the post's top
        over_post = _offset("post_top_pos", aim, clear)
        yield from _while(op, _ring_held, op.move(over_post, CLOSED, tol=0.006, point="ring_pos"))
        # down the post; with a re-try, the operator is not happy at the post's top and lifts to re-aim
        depth = 0.0 if op.take_retry() else op.env.task.success_depth + 0.008
        descend = _descend_along_axis(op, aim, "ring_pos", "post_top_pos", depth, 0.015, align_tol=0.004)
        yield from _while(op, _ring_held_steady(op), descend)
        state = op.state()
        if _ring_held(state) and state["post_top_pos"][2] - state["ring_pos"][2] > op.env.task.success_depth:
            yield from op.hold(OPEN, steps=3)  # let go: the env ends the episode on success
        yield from _while(op, _ring_held, op.move(over_post, CLOSED, tol=0.01, point="ring_pos", max_steps=4))


_SCRIPTS: dict[str, Callable[[ScriptedOperator], Script]] = {
    "pick_cube": _pick_cube_script,
    "insert_peg": _insert_peg_script,
    "hang_ring": _hang_ring_script,
}

"""A scripted stand-in for a human with a SpaceMouse, driving the simulator from privileged state.

Per task, a waypoint script (a generator yielding intended actions) reads the ground-truth
object poses from `env.unwrapped.privileged_state()`. On top of it the operator behaves like a
person: noisy commands, imperfect alignment (an aiming error per attempt that shrinks with every
attempt), occasional hesitation (a few near-still steps) and, in some episodes, a deliberate
regrasp / re-try. Its randomness comes only from its own seed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

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
        self._gripper = OPEN
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


def _pick_cube_script(op: ScriptedOperator) -> Script:
    """Hover above the cube, descend, close, lift; open and re-try if the cube did not come."""
    attempt = 0
    while True:
        attempt += 1
        aim = op.aim_offset(attempt)
        yield from op.move(_offset("cube_pos", aim, 0.07), OPEN, tol=0.015)
        yield from op.move(_offset("cube_pos", aim, 0.0), OPEN, tol=0.006, speed=0.6, max_steps=12)
        yield from op.hold(CLOSED, steps=3)
        if op.take_retry():  # not happy with this grasp: let go, back off and do it again
            yield from op.hold(OPEN, steps=2)
            yield from op.move(_offset("tcp_pos", np.zeros(2), 0.05), OPEN, tol=0.01, max_steps=4)
            continue
        lift_xy = op.state()["tcp_pos"][:2]
        yield from op.move(lambda s: np.array([*lift_xy, 0.14]), CLOSED, tol=0.01, speed=0.8, max_steps=12)
        yield from op.hold(CLOSED, steps=3)  # the env ends the episode on success
        yield from op.hold(OPEN, steps=2)  # the cube did not come: let go and start over
        yield from op.move(_offset("tcp_pos", np.zeros(2), 0.04), OPEN, tol=0.01, max_steps=3)


def _descend_into_hole(op: ScriptedOperator, aim: np.ndarray, retry: bool) -> Script:
    """Push the peg down while centring it; return when stuck on the rim or (if retry) half in."""
    best_depth, no_progress = -np.inf, 0
    while no_progress < 3:
        state = op.state()
        depth = state["hole_top_pos"][2] - state["peg_tip_pos"][2]
        if retry and depth > 0.012:
            return
        no_progress = 0 if depth > best_depth + 0.002 else no_progress + 1
        best_depth = max(best_depth, depth)
        xy_error = state["hole_top_pos"][:2] + aim - state["peg_tip_pos"][:2]
        yield op.command(np.array([*xy_error, -0.01]), CLOSED, speed=0.6)


def _insert_peg_script(op: ScriptedOperator) -> Script:
    """Hover over the hole, descend with xy corrections; back off and re-aim when stuck."""
    attempt = 0
    while True:
        attempt += 1
        aim = op.aim_offset(attempt)
        retry = op.take_retry()
        yield from op.move(_offset("hole_top_pos", aim, 0.02), CLOSED, tol=0.006, point="peg_tip_pos")
        yield from _descend_into_hole(op, aim, retry)
        yield from op.move(_offset("hole_top_pos", aim, 0.025), CLOSED, tol=0.01, point="peg_tip_pos", max_steps=4)


_SCRIPTS: dict[str, Callable[[ScriptedOperator], Script]] = {
    "pick_cube": _pick_cube_script,
    "insert_peg": _insert_peg_script,
}

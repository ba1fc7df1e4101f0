"""A scripted stand-in for a human who watches the policy and takes over when it gets into trouble.

`ScriptedIntervener(env, seed)` is a `TeleopDevice` for HIL-ConRFT on the simulator. It is usually
NOT engaged (the policy acts). From privileged sim state it tracks a task error (how far the task
is from done) and engages, like a person grabbing the SpaceMouse, when

  * stalled: the error has not improved on its best value by `progress_margin` for `patience`
    steps, or
  * in a clearly bad state: the TCP is near a side or the top of the workspace box, the cube was
    knocked `knock_distance` away (pick_cube), the peg tip is beside the fixture (insert_peg), or
    the ring was knocked or dropped `knock_distance` away or is held low beside the post (hang_ring).

A trigger is acted on with `probability`, after `reaction_delay` steps; the correction burst is
driven by an internal `ScriptedOperator` (a fresh script per burst) for `burst_steps` steps (by
default the task's), or
shorter once the error improved by `release_progress` (if set), then control goes back to the
policy. At most `max_interventions` bursts per episode. Randomness comes only from `seed`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from vlarft.robot_io.contract import ACTION_DIM
from vlarft.robot_io.sim.scripted_operator import OperatorKnobs, ScriptedOperator
from vlarft.robot_io.teleop.base import TeleopCommand, idle_command

STALL, BAD_STATE = "stall", "bad_state"  # reasons of a trigger (`last_trigger`)


@dataclasses.dataclass(frozen=True)
class IntervenerKnobs:
    """When and how the scripted human intervenes.

    Attributes:
      patience: steps without task progress before the human reacts (10 = 1 s at 10 Hz).
      progress_margin: the task error must beat its best value by this much to count as
        progress, m (5 mm).
      reaction_delay: steps between noticing a problem and taking over (2 = 0.2 s).
      probability: chance that a noticed problem is acted on; an ignored one is reconsidered
        after another `patience` steps (1.0 = always).
      burst_steps: longest correction burst, steps; None = the task's (`TaskMonitor.burst_steps`:
        35 = 3.5 s for pick_cube and insert_peg, long enough for the noisy operator to finish most
        episodes from the start pose; 55 for hang_ring, enough to pick a dropped ring up again and
        hang it).
      release_progress: hand back early once the task error fell this much since the burst
        began, m; None = always drive the full burst (default).
      min_burst_steps: shortest burst when `release_progress` is set, steps (5).
      max_interventions: bursts allowed per episode (3).
      edge_margin: "bad state" when the TCP is this close to a side or the top of the workspace
        box, m (the table-side bound is excluded: grasping happens there).
      knock_distance: pick_cube / hang_ring "bad state" when the cube / the ring (not held) moved
        this far in x/y since the policy got control, m.
      resume_script: later bursts of an episode continue the operator's script (its attempt
        count and aim, like a person remembering the last try); False = a fresh script per burst.
      operator: knobs of the internal `ScriptedOperator` that drives the corrections.
    """

    patience: int = 10
    progress_margin: float = 0.005
    reaction_delay: int = 2
    probability: float = 1.0
    burst_steps: int | None = None
    release_progress: float | None = None
    min_burst_steps: int = 5
    max_interventions: int = 3
    edge_margin: float = 0.01
    knock_distance: float = 0.05
    resume_script: bool = True
    operator: OperatorKnobs = dataclasses.field(default_factory=OperatorKnobs)

    def __post_init__(self):
        too_short_burst = self.burst_steps is not None and self.burst_steps < 1
        if self.patience < 1 or too_short_burst or self.reaction_delay < 0 or self.max_interventions < 0:
            raise ValueError(f"bad step counts in {self}")
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"probability must be in [0, 1], got {self.probability}")


# --- task monitors: error to completion and "clearly bad" states, from privileged state ---------


def _pick_cube_error(state: dict, task) -> float:
    """TCP-to-cube distance plus the height the cube still has to be lifted, m."""
    reach = np.linalg.norm(state["tcp_pos"] - state["cube_pos"])
    lift_goal = state["cube_half"] + task.lift_height
    return float(reach + max(0.0, lift_goal - state["cube_pos"][2]))


def _insert_peg_error(state: dict, task) -> float:
    """Distance of the peg tip to the point `success_depth` down the hole axis, m."""
    goal = state["hole_top_pos"] - np.array([0.0, 0.0, task.success_depth])
    return float(np.linalg.norm(state["peg_tip_pos"] - goal))


def _pick_cube_bad(state: dict, reference: dict, knobs: IntervenerKnobs) -> bool:
    """The cube was knocked away from where it was when the policy got control."""
    moved = np.linalg.norm(state["cube_pos"][:2] - reference["cube_pos"][:2])
    return bool(moved > knobs.knock_distance)


def _insert_peg_bad(state: dict, reference: dict, knobs: IntervenerKnobs) -> bool:
    """The peg tip is below the fixture top but not in the hole, i.e. beside the fixture."""
    below_top = state["hole_top_pos"][2] - state["peg_tip_pos"][2] > 0.005
    off_axis = np.linalg.norm(state["peg_tip_pos"][:2] - state["hole_top_pos"][:2])
    return bool(below_top and off_axis > state["hole_half"] + 0.005)


def _hang_ring_error(state: dict, task) -> float:
    """Path still to go, m: the hand to the knob (unless the ring is held), then the ring's centre
    up over the post's top (unless the hole is already around the post) and down the post to
    `success_depth` + 5 mm."""
    ring, post_top = state["ring_pos"], state["post_top_pos"]
    goal_z = post_top[2] - task.success_depth - 0.005
    off_axis = float(np.linalg.norm(ring[:2] - post_top[:2]))
    if off_axis <= state["inner_radius"] - state["post_radius"] and ring[2] < post_top[2]:
        path = max(0.0, ring[2] - goal_z)  # around the post already: only down
    else:
        clear_z = post_top[2] + state["tube_radius"] + 0.01
        path = max(0.0, clear_z - ring[2]) + off_axis + (clear_z - goal_z)
    reach = 0.0 if state["ring_grasped"] else float(np.linalg.norm(state["tcp_pos"] - state["knob_grasp_pos"]))
    return float(reach + path)


def _hang_ring_bad(state: dict, reference: dict, knobs: IntervenerKnobs) -> bool:
    """The ring was knocked (or dropped) away from where it was when the policy got control, or it
    is held below the post's top beside the post (pressed against its side)."""
    knocked = not state["ring_grasped"] and np.linalg.norm(
        state["ring_pos"][:2] - reference["ring_pos"][:2]) > knobs.knock_distance
    off_axis = np.linalg.norm(state["ring_pos"][:2] - state["post_top_pos"][:2])
    hole_around_post = off_axis < state["inner_radius"] - state["post_radius"] + 0.003
    touching_distance = state["inner_radius"] + 2 * state["tube_radius"] + state["post_radius"]
    beside_post = (bool(state["ring_grasped"]) and state["ring_pos"][2] < state["post_top_pos"][2] - 0.005
                   and not hole_around_post and off_axis < touching_distance + 0.01)
    return bool(knocked or beside_post)


@dataclasses.dataclass(frozen=True)
class TaskMonitor:
    """What the human watches in one task.

    Attributes:
      error: (privileged state, task) -> how far the task is from done, m.
      bad_state: (state, state when the policy got control, knobs) -> clearly bad right now.
      burst_steps: default longest correction burst, steps.
    """

    error: Callable[[dict, object], float]
    bad_state: Callable[[dict, dict, IntervenerKnobs], bool]
    burst_steps: int = 35


_MONITORS: dict[str, TaskMonitor] = {
    "pick_cube": TaskMonitor(_pick_cube_error, _pick_cube_bad),
    "insert_peg": TaskMonitor(_insert_peg_error, _insert_peg_bad),
    "hang_ring": TaskMonitor(_hang_ring_error, _hang_ring_bad, burst_steps=55),
}


@dataclasses.dataclass
class _StallWatch:
    """Counts steps since the task error last beat its best value by a margin."""

    best: float = np.inf
    stale_steps: int = 0

    def restart(self, error: float) -> None:
        self.best, self.stale_steps = error, 0

    def update(self, error: float, margin: float) -> None:
        if error < self.best - margin:
            self.restart(error)
        else:
            self.stale_steps += 1


class ScriptedIntervener:
    """TeleopDevice: idle while the policy progresses, a `ScriptedOperator` burst when it does not."""

    def __init__(self, env, seed: int = 0, knobs: IntervenerKnobs | None = None, **overrides):
        self.env = env.unwrapped
        self.knobs = dataclasses.replace(knobs or IntervenerKnobs(), **overrides)
        task = self.env.task.name
        if task not in _MONITORS:
            raise ValueError(f"no intervention monitor for task {task!r}; known: {sorted(_MONITORS)}")
        self._monitor = _MONITORS[task]
        self.burst_steps = self.knobs.burst_steps or self._monitor.burst_steps  # longest burst, steps
        operator_seed, own_seed = np.random.SeedSequence(seed).spawn(2)
        self._rng = np.random.default_rng(own_seed)
        self.operator = ScriptedOperator(
            env, seed=int(operator_seed.generate_state(1)[0]), knobs=self.knobs.operator)
        self.total_interventions = 0  # over the device's lifetime
        self.total_intervention_steps = 0
        self.reset()

    # --- TeleopDevice ------------------------------------------------------------------------

    def reset(self) -> None:
        """Start a new episode: idle, counters and watch cleared (read the state at the first poll)."""
        self.interventions = 0  # correction bursts this episode
        self.intervention_steps = 0  # engaged steps this episode
        self.engaged = False  # whether the last poll was engaged
        self.last_trigger: str | None = None  # STALL or BAD_STATE: why the last burst began
        self._watch = _StallWatch()
        self._reference: dict | None = None  # state when the policy last got control
        self._countdown: int | None = None  # steps left until taking over (reaction delay)
        self._snooze = 0  # steps left of ignoring problems (after a trigger was not acted on)
        self._burst_left = 0
        self._burst_start_error = np.inf

    def poll(self) -> TeleopCommand:
        """Idle, or the operator's correction while a burst is on."""
        state = self.env.privileged_state()
        error = self._monitor.error(state, self.env.task)
        if self._reference is None:  # first poll of the episode
            self._hand_back(state, error)
        elif self.engaged:
            if not self._burst_over(error):
                return self._correction()
            self._hand_back(state, error)
        else:
            self._watch.update(error, self.knobs.progress_margin)
        if self._takes_over(state, error):
            self._begin_burst(error)
            return self._correction()
        return idle_command(ACTION_DIM)

    def close(self) -> None:
        """Close the internal operator (nothing else to release)."""
        self.operator.close()

    # --- deciding ----------------------------------------------------------------------------

    def _takes_over(self, state: dict, error: float) -> bool:
        """True on the step the human's hand reaches the device."""
        if self._countdown is None and not self._reacts(state, error):
            return False
        if self._countdown == 0:
            return True
        self._countdown -= 1
        return False

    def _reacts(self, state: dict, error: float) -> bool:
        """Whether the human notices a problem now and decides to act (starts the reaction delay)."""
        if self.interventions >= self.knobs.max_interventions:
            return False
        if self._snooze > 0:
            self._snooze -= 1
            return False
        trigger = self._trigger(state)
        if trigger is None:
            return False
        if self._rng.random() >= self.knobs.probability:  # noticed, but let the policy go on
            self._watch.restart(error)
            self._snooze = self.knobs.patience
            return False
        self.last_trigger, self._countdown = trigger, self.knobs.reaction_delay
        return True

    def _trigger(self, state: dict) -> str | None:
        """BAD_STATE, STALL or None: what (if anything) is wrong right now."""
        if self._bad_state(state):
            return BAD_STATE
        return STALL if self._watch.stale_steps >= self.knobs.patience else None

    def _bad_state(self, state: dict) -> bool:
        """TCP near a side or the top of the workspace box, or the task's own bad state."""
        cfg, margin = self.env.config, self.knobs.edge_margin
        tcp = state["tcp_pos"]
        near_side = np.any(tcp[:2] < np.asarray(cfg.workspace_low[:2]) + margin) or np.any(
            tcp[:2] > np.asarray(cfg.workspace_high[:2]) - margin)
        near_top = tcp[2] > cfg.workspace_high[2] - margin
        return bool(near_side or near_top or self._monitor.bad_state(state, self._reference, self.knobs))

    def _burst_over(self, error: float) -> bool:
        """The burst has run `burst_steps`, or (with `release_progress`) the robot is back on track."""
        if self._burst_left <= 0:
            return True
        k = self.knobs
        done_steps = self.burst_steps - self._burst_left
        return (k.release_progress is not None and done_steps >= k.min_burst_steps
                and self._burst_start_error - error >= k.release_progress)

    # --- acting ------------------------------------------------------------------------------

    def _begin_burst(self, error: float) -> None:
        self.engaged, self._countdown = True, None
        self._burst_left, self._burst_start_error = self.burst_steps, error
        self.interventions += 1
        self.total_interventions += 1
        if self.interventions == 1 or not self.knobs.resume_script:
            self.operator.reset()  # a fresh script: it starts from wherever the robot is

    def _correction(self) -> TeleopCommand:
        self._burst_left -= 1
        self.intervention_steps += 1
        self.total_intervention_steps += 1
        return self.operator.poll()

    def _hand_back(self, state: dict, error: float) -> None:
        """Give (or leave) control to the policy: it gets a fresh `patience` from here."""
        self.engaged, self._burst_left = False, 0
        self._reference = state
        self._watch.restart(error)

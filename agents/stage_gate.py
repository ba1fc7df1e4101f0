"""The gate between the offline and the online stage: is the Cal-ConRFT policy fit for the robot?

Users of the reference code report an arm that "remained motionless" online after stage 1, with
no way to check the stage-1 policy first. Before the online stage starts, `check_offline_policy`
compares the offline policy with the SFT policy it started from, on the dataset's held-out
demonstrations and (on a simulator) in a short evaluation:

  * saturation: per action dimension, the share of deterministic actions at the box edge, beyond
    the share of demonstration actions there (a policy pinned to the bound moves nowhere useful);
  * action error: mean squared error against the held-out demo actions, against SFT's;
  * Q calibration: the critic's Q of the demo actions against their Monte-Carlo returns
    (correlation and mean error; a critic the actor should not follow has no positive correlation);
  * evaluation (simulators): success of both policies on the same fixed seeds.

A check that fails marks the policy clearly broken; `OnlineConfig.gate` decides what happens:
"refuse" (default) raises `StageGateError` with the verdict, "warn" prints it and goes on, "off"
skips the checks.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from vlarft.agents.evaluation import evaluate

GATE_MODES = ("refuse", "warn", "off")


class StageGateError(RuntimeError):
    """The offline policy failed the checks before the online stage."""


@dataclasses.dataclass(frozen=True)
class GateLimits:
    """When a check fails.

    Attributes:
      saturation_excess: a dimension's saturated share may exceed the demos' by at most this.
      error_ratio, error_slack: offline action MSE <= error_ratio x SFT's + error_slack.
      min_q_correlation: Q of demo actions must correlate with their returns at least this much.
      success_drop: offline success >= SFT success - success_drop (simulator evaluation).
    """

    saturation_excess: float = 0.5
    error_ratio: float = 3.0
    error_slack: float = 0.01
    min_q_correlation: float = 0.0
    success_drop: float = 0.3


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclasses.dataclass(frozen=True)
class GateVerdict:
    checks: tuple[Check, ...]
    figures: dict

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def report(self) -> str:
        lines = [f"stage gate (offline policy before the online stage): {'PASS' if self.ok else 'FAIL'}"]
        lines += [f"  [{'ok' if c.ok else 'FAIL'}] {c.name}: {c.detail}" for c in self.checks]
        return "\n".join(lines)

    def summary(self) -> str:
        """One line: the verdict and the checks' names (a passing gate needs no more on a terminal)."""
        return (f"stage gate (offline policy before the online stage): {'PASS' if self.ok else 'FAIL'} "
                f"({', '.join(c.name for c in self.checks)})")


def saturation(actions: np.ndarray) -> np.ndarray:
    """Per dimension, the share of actions at the box edge (|a| >= 0.999)."""
    return np.mean(np.abs(actions) >= 0.999, axis=0)


def q_calibration(q: np.ndarray, returns: np.ndarray, min_correlation: float, figures: dict) -> Check:
    """Q of demo actions vs their Monte-Carlo returns: fails on a non-finite Q or a correlation
    below `min_correlation` (no correlation is computed when either side is constant)."""
    finite = bool(np.all(np.isfinite(q)))
    varied = finite and np.std(q) > 0 and np.std(returns) > 0
    corr = float(np.corrcoef(q, returns)[0, 1]) if varied else float("nan")
    error = float(np.mean(q - returns)) if finite else float("nan")
    figures.update(q_return_correlation=corr, q_minus_return=error)
    return Check("Q calibration", finite and (not varied or corr >= min_correlation),
                 f"corr(Q, Monte-Carlo return) {corr:.2f}, mean Q - return {error:+.3f} "
                 f"(returns {np.min(returns):.2f}..{np.max(returns):.2f})")


def check_offline_policy(learner, offline_head, sft_head, critic_params, held_out: dict, *,
                         make_policy: Callable | None = None, env_factory: Callable | None = None,
                         episodes: int = 10, limits: GateLimits = GateLimits()) -> GateVerdict:
    """The verdict on the offline head (see the module docstring).

    Args:
      learner: the online `Learner` (its critic, normaliser and deterministic sampler).
      offline_head, sft_head: head parameters of the offline and the SFT policy.
      critic_params: the offline critic.
      held_out: `training.embedded_steps(..., returns=...)` of the held-out split.
      make_policy: head params -> acting policy (deterministic), for the evaluation.
      env_factory: () -> env for the evaluation (None: no evaluation, e.g. a real robot).
      episodes: evaluation episodes per policy (same fixed seeds for both).
    """
    checks, figures = [], {}
    embedding, state, demo = held_out["embedding"], held_out["state"], held_out["action"]
    offline_actions = learner.eval_actions(offline_head, embedding, state)
    sft_actions = learner.eval_actions(sft_head, embedding, state)

    excess = saturation(offline_actions) - saturation(demo)
    worst = int(np.argmax(excess))
    figures["saturation_offline"] = saturation(offline_actions).round(3).tolist()
    figures["saturation_demos"] = saturation(demo).round(3).tolist()
    checks.append(Check("action saturation", bool(excess[worst] <= limits.saturation_excess),
                        f"dimension {worst} at the bound in {saturation(offline_actions)[worst]:.0%} of held-out "
                        f"states vs {saturation(demo)[worst]:.0%} of demo actions (allowed excess "
                        f"{limits.saturation_excess:.0%})"))

    mse_offline = float(np.mean((offline_actions - demo) ** 2))
    mse_sft = float(np.mean((sft_actions - demo) ** 2))
    figures.update(action_mse_offline=mse_offline, action_mse_sft=mse_sft)
    checks.append(Check("held-out action error", mse_offline <= limits.error_ratio * mse_sft + limits.error_slack,
                        f"MSE {mse_offline:.4f} vs SFT {mse_sft:.4f} on {len(demo)} held-out demo steps"))

    q = learner.q_values(critic_params, {"embedding": embedding, "state": state}, demo)
    checks.append(q_calibration(q, held_out["mc_return"], limits.min_q_correlation, figures))

    if env_factory is not None and make_policy is not None and episodes > 0:
        offline_eval = evaluate(make_policy(offline_head), env_factory, episodes)
        sft_eval = evaluate(make_policy(sft_head), env_factory, episodes)
        figures.update(success_offline=offline_eval.success_rate, success_sft=sft_eval.success_rate,
                       length_offline=offline_eval.mean_episode_length, length_sft=sft_eval.mean_episode_length)
        checks.append(Check("evaluation", offline_eval.success_rate >= sft_eval.success_rate - limits.success_drop,
                            f"success {offline_eval.success_rate:.0%} (mean length {offline_eval.mean_episode_length:.1f})"
                            f" vs SFT {sft_eval.success_rate:.0%} ({sft_eval.mean_episode_length:.1f}) over "
                            f"{episodes} episodes"))
    return GateVerdict(tuple(checks), figures)


def enforce(verdict: GateVerdict, mode: str, log: Callable[[str], None]) -> None:
    """Prints the verdict (one line when it passed, every check when it failed); raises
    StageGateError when it failed and `mode` is "refuse"."""
    if mode not in GATE_MODES:
        raise ValueError(f"unknown gate mode {mode!r}; known: {GATE_MODES}")
    log(verdict.report() if not verdict.ok else verdict.summary())
    if not verdict.ok and mode == "refuse":
        raise StageGateError(f"{verdict.report()}\nthe offline policy looks broken: fix the offline stage, or start "
                             f"online anyway with --online_gate=warn")

"""Benchmark the actor's control-loop pauses while a learner in its process compiles and trains. Prints figures.

    python tools/benchmark_control_pauses.py [--config=small] [--batch_size=256] [--task=pick_cube]
                                             [--rounds=2] [--updates=30]

With `--role=both` the online stage runs the actor as a thread beside the learner. A real
robot's watchdog trips when an action comes late (the fake Franka's margin: 1 s). Here the actor
is the real simulator (`sim:<task>`, its cameras rendered every step). It is driven by the policy
head on a random embedding; the backbone's share of a step is `benchmark_agent.py
--parts=latency`. The learner is the stage's `Learner` (embedding critic, `--config`,
`--batch_size`).

Each round does the following twice in this process, once with CPython's defaults and once
inside `robot_io/control_timing.steady_control` (as the stage's actor runs). The order
alternates between rounds.
- The learner's update is traced and compiled from scratch (`jax.clear_caches()`) while the
  actor steps the env.
- `--updates` learner updates then run beside it.

Figures:
- the longest and the 99th-percentile pause from an observation to the next action, with and
  without steady control (target for the longest with it: <= 100 ms, one period of a 10 Hz
  loop);
- learner updates/s with steady control over without it (the price of the shorter switch
  interval).
The modules the online stage imports (TensorFlow, Reverb) are loaded first, so the garbage
collector walks a heap of the stage's size.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import threading
import time

import jax
import numpy as np

import vlarft.agents.online.stage  # noqa: F401  (the stage's heap: TensorFlow, Reverb, the RLDS readers)
from vlarft.agents.config import get_config, loss_preset
from vlarft.agents.learner import Learner
from vlarft.agents.process_settings import use_process_settings
from vlarft.robot_io.control_timing import ControlPauses, steady_control
from vlarft.robot_io.factory import make_env
from vlarft.tools.benchmark_agent import replay_like_batch


class SimActor(threading.Thread):
    """Steps the simulator with the policy head's actions (random embedding) until stopped,
    recording its pauses; inside `steady_control` when `steady`."""

    def __init__(self, env, act, steady: bool):
        super().__init__(daemon=True, name="benchmark-actor")
        self.env, self.act, self.steady = env, act, steady
        self.pauses, self.stop, self.ready = ControlPauses(), threading.Event(), threading.Event()

    def run(self) -> None:
        with steady_control() if self.steady else contextlib.nullcontext():
            observation, _ = self.env.reset(seed=0)
            self.act(observation)  # compiled before timing (jax.clear_caches() dropped it), as the stage warms up
            self.pauses.observed()
            self.ready.set()
            while not self.stop.is_set():
                action = self.act(observation)
                self.pauses.acting()
                observation, _, terminated, truncated, _ = self.env.step(action)
                self.pauses.observed()
                if terminated or truncated:
                    observation, _ = self.env.reset()
                    self.pauses.observed()


def one_setting(env, act, learner: Learner, item: dict, state, steady: bool, updates: int) -> dict:
    """The learner compiles from scratch, then runs `updates` updates, while the actor steps."""
    jax.clear_caches()
    actor = SimActor(env, act, steady)
    actor.start()
    actor.ready.wait()
    try:
        state, metrics = learner.step(state, item)  # traced + compiled here
        jax.block_until_ready(metrics)
        compile_pauses = actor.pauses.summary()
        start = time.perf_counter()
        for _ in range(updates):
            state, metrics = learner.step(state, item)
        jax.block_until_ready(metrics)
        rate = updates * learner.updates_per_step / (time.perf_counter() - start)
    finally:
        actor.stop.set()
        actor.join(timeout=60)
    return {"compile": compile_pauses, "all": actor.pauses.summary(), "updates_per_s": rate}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="small")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--task", default="pick_cube")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--updates", type=int, default=30, help="learner updates timed per setting")
    args = parser.parse_args(argv)
    use_process_settings()  # what the stages run with

    config = get_config(args.config)
    loss = loss_preset("paper", "online")
    learner = Learner(config, loss, 7, (), np.zeros(19), np.ones(19),
                      rows_per_source=(args.batch_size,))
    item = replay_like_batch(np.random.default_rng(0), args.batch_size * loss.critic_actor_ratio,
                             config.backbone.width, 0, pixels=False)
    state = learner.init(jax.random.PRNGKey(0), item)
    params = state.policy_params
    embedding = np.random.default_rng(1).normal(size=(1, config.backbone.width)).astype(np.float32)

    def act(observation):
        return learner.eval_actions(params, embedding, observation["state"][None])[0]

    env = make_env(f"sim:{args.task}")
    runs = {False: [], True: []}
    try:
        for round_index in range(args.rounds):
            for steady in ((False, True) if round_index % 2 == 0 else (True, False)):
                runs[steady].append(one_setting(env, act, learner, item, state, steady, args.updates))
                r = runs[steady][-1]
                print(f"round {round_index + 1}, {'steady control' if steady else 'CPython defaults'}: "
                      f"while the learner compiled {r['compile'].get('pauses', 0)} actor steps, longest pause "
                      f"{r['compile'].get('max_ms', float('nan')):.0f} ms; overall p99 "
                      f"{r['all'].get('p99_ms', float('nan')):.0f} ms, longest {r['all'].get('max_ms', float('nan')):.0f}"
                      f" ms; learner {r['updates_per_s']:.1f} updates/s", flush=True)
    finally:
        env.close()

    def median(steady: bool, part: str, figure: str) -> float:
        return statistics.median(r[part][figure] for r in runs[steady])

    rate_ratio = statistics.median(s["updates_per_s"] / d["updates_per_s"] for s, d in zip(runs[True], runs[False]))
    figures = {"control_pause_max_ms_steady": {"value": median(True, "all", "max_ms"), "target": "<= 100"},
               "control_pause_max_ms_default": {"value": median(False, "all", "max_ms"), "target": None},
               "control_pause_p99_ms_steady": {"value": median(True, "all", "p99_ms"), "target": None},
               "control_pause_p99_ms_default": {"value": median(False, "all", "p99_ms"), "target": None},
               "learner_rate_steady_over_default": {"value": round(rate_ratio, 3), "target": None}}
    details = {"config": args.config, "batch_size": args.batch_size, "task": args.task,
               "runs": {("steady" if k else "default"): v for k, v in runs.items()}}
    print(json.dumps({"figures": figures, "details": details}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

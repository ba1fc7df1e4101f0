"""Benchmark the online learner loop as the online stage runs it vs the bare update. Prints figures.

    python tools/benchmark_online.py [--config=tiny] [--batch_size=256] [--steps=60] [--rounds=2]
                                     [--steps_per_dispatch=4]

The loop is the stage's own: `LearnerLoop` on real Reverb tables (`ConRFTBuilder`'s demo + online
tables, 50/50 mixed batches, the online table's UTD limiter with the simulator's lockstep lead),
parameters published to the real parameter store, while an actor thread collects beside it.
The actor is SYNTHETIC, not the simulator: per env step it runs the policy head on a random
embedding (as the real actor does) and writes the step through a `TransitionWriter`, flushed,
so the learner's loop and the actor compete for the cores as in the stage, without MuJoCo
rendering. The bare update is `Learner.step` on an item already on the device, in the same
process, measured between the loop rounds. Figures: updates/s of each, their ratio (issue #11:
>= 0.5), and the loop's wait accounting (share of its time waiting for a batch, in the update,
in the rest), with one learner step per call and with `--steps_per_dispatch` per call.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import threading
import time

import jax
import numpy as np
import reverb

from vlarft.agents.builder import ConRFTBuilder
from vlarft.agents.config import STEPS_PER_DISPATCH, get_config, loss_preset
from vlarft.agents.learner import Learner
from vlarft.agents.metrics_log import TrainingLog
from vlarft.agents.online.learner_loop import LearnerLoop
from vlarft.agents.online_log import OnlineRecord
from vlarft.agents.parameters import ReverbParameterStore
from vlarft.agents.process_settings import use_process_settings
from vlarft.datasets.replay import TransitionWriter
from vlarft.datasets.schema import EpisodeSpec
from vlarft.tools.benchmark_utils import timed

STATE, ACTION, EPISODE = 19, 7, 100


def random_step(rng, embedding: int, action=None) -> dict:
    return {"observation": {"embedding": rng.normal(size=embedding).astype(np.float32),
                            "state": rng.normal(size=STATE).astype(np.float32)},
            "action": rng.uniform(-1, 1, ACTION).astype(np.float32) if action is None else action,
            "reward": np.float32(0.0), "discount": np.float32(1.0), "mc_return": np.float32(0.0),
            "intervention": False}


class SyntheticActor(threading.Thread):
    """Collects into the online table as fast as its limiter lets it: per step the policy head's
    action on a random observation, then the step written and flushed (as the stage's actor)."""

    def __init__(self, client, learner: Learner, params_of, embedding: int, table: str):
        super().__init__(daemon=True, name="synthetic-actor")
        self.client, self.learner, self.params_of, self.embedding, self.table = (client, learner, params_of,
                                                                                embedding, table)
        self.stop = threading.Event()
        self.steps = 0

    def run(self) -> None:
        rng = np.random.default_rng(1)
        with TransitionWriter(self.client, self.table) as writer:
            while not self.stop.is_set():
                step = random_step(rng, self.embedding)
                obs = step["observation"]
                step["action"] = self.learner.eval_actions(self.params_of(), obs["embedding"][None],
                                                           obs["state"][None])[0]
                writer.append(step)
                while not self.stop.is_set():  # the limiter holds inserts back in lockstep
                    try:
                        writer.flush(timeout_ms=100)
                        break
                    except reverb.errors.DeadlineExceededError:
                        pass
                self.steps += 1
                if self.steps % EPISODE == 0:
                    writer.end_episode(timeout_ms=10_000)


def fill_demo(client, table: str, embedding: int, transitions: int) -> None:
    rng = np.random.default_rng(0)
    with TransitionWriter(client, table) as writer:
        for t in range(transitions + 1):
            writer.append(random_step(rng, embedding))
            if (t + 1) % (EPISODE + 1) == 0:
                writer.end_episode()
        writer.end_episode()


def run_loop(builder, learner, state, server, store, workdir, steps: int, k: int) -> tuple[object, dict]:
    """`steps` learner steps of the stage's loop (after one compiling call): (state, figures)."""
    batches = builder.make_iterator(server.address, steps=k)
    log, record = TrainingLog(workdir, steps, 0, "bench", False), OnlineRecord(workdir)
    online = builder.config.online

    def loop_for(count):
        return LearnerLoop(learner, state, batches, store, lambda s: None, log, record, done=lambda: False,
                           max_steps=int(state.step) + count, progress=lambda: 0,
                           publish_every=online.publish_every, log_every=builder.config.train.log_every,
                           checkpoint_every=10 ** 9, steps_per_dispatch=k)

    try:
        warm = loop_for(k)
        state = warm.run()  # compiles
        loop = loop_for(steps)
        start = time.perf_counter()
        state = loop.run()
        wall = time.perf_counter() - start
    finally:
        batches.close()
        log.close()
    updates = loop.updates * learner.updates_per_step
    shares = {f"share_{name[:-2]}": seconds / wall for name, seconds in loop.waits.items()}
    return state, {"updates_per_s": updates / wall, **shares}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=60, help="learner steps per loop round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps_per_dispatch", type=int, default=STEPS_PER_DISPATCH)
    parser.add_argument("--demo_transitions", type=int, default=2000)
    args = parser.parse_args(argv)
    use_process_settings()  # what the stages run with

    config = get_config(args.config)
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, batch_size=args.batch_size))
    loss = loss_preset("paper", "online")
    embedding = config.backbone.width
    spec = EpisodeSpec(cameras={"front": (16, 16)}, state_dim=STATE, action_dim=ACTION, embedding_dim=embedding)
    builder = ConRFTBuilder(config, loss, spec, export=None, online=True,
                            actor_lead=config.online.actor_lead("sim:benchmark"))
    learner = Learner(config, loss, ACTION, (), np.zeros(STATE), np.ones(STATE), online_source=0,
                      rows_per_source=tuple(builder.rows_per_source().values()))
    replay = builder.replay_config()
    server = builder.make_replay_server()
    actor = None
    try:
        fill_demo(server.client, replay.demo_table, embedding, args.demo_transitions)
        demo_only = builder.make_iterator(server.address, demo_only=True)
        item = next(demo_only)
        demo_only.close()
        state = learner.init(jax.random.PRNGKey(0), item)
        store = ReverbParameterStore(server.client, state.head_params, config.online.max_actors, secret=b"benchmark-online-secret")
        store.publish(state.policy_params, 0)
        holder = {"state": state}
        actor = SyntheticActor(server.client, learner, lambda: holder["state"].policy_params, embedding,
                               replay.online_table)
        actor.start()

        def bare_step():
            holder["state"], metrics = learner.step(holder["state"], item)
            return metrics

        jax.block_until_ready(bare_step())  # compiled here, not inside the first timed round
        bare, loops = [], {1: [], args.steps_per_dispatch: []}
        with tempfile.TemporaryDirectory() as workdir:
            for _ in range(args.rounds):
                bare.append(learner.updates_per_step / timed(bare_step, max(3, args.steps // 4)))
                for k in loops:
                    holder["state"], figures = run_loop(builder, learner, holder["state"], server, store, workdir,
                                                        args.steps, k)
                    loops[k].append(figures)
    finally:
        if actor is not None:
            actor.stop.set()
            actor.join(timeout=30)
        server.stop()

    k = args.steps_per_dispatch
    bare_rate = statistics.median(bare)
    result = {}
    for steps, rounds in loops.items():
        result[steps] = {name: statistics.median(r[name] for r in rounds) for name in rounds[0]}
        result[steps]["over_bare"] = statistics.median(r["updates_per_s"] / b for r, b in zip(rounds, bare))
        f = result[steps]
        print(f"[{args.config}, batch {args.batch_size}] online loop, {steps} learner step(s) per call: "
              f"{f['updates_per_s']:.1f} updates/s = {f['over_bare']:.2f} x the bare update ({bare_rate:.1f}/s); "
              f"time waiting for batches {f['share_batch']:.0%}, in the update {f['share_update']:.0%}, "
              f"other {f['share_other']:.0%}")
    print(f"synthetic actor: {actor.steps} env steps collected beside the learner")
    figures = {"online_loop_over_bare_update": {"value": round(result[k]["over_bare"], 3), "target": ">= 0.5"},
               "online_loop_updates_per_s": {"value": round(result[k]["updates_per_s"], 1), "target": None},
               "online_loop_one_step_per_call_over_bare": {"value": round(result[1]["over_bare"], 3), "target": None},
               "bare_update_per_s": {"value": round(bare_rate, 1), "target": None}}
    details = {"steps_per_dispatch": k, "loops": {str(s): f for s, f in result.items()}, "bare_updates_per_s": bare}
    print(json.dumps({"figures": figures, "details": details}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

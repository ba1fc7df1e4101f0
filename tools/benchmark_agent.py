"""Benchmark the agent: learner updates/s and action latency. Prints figures, asserts nothing.

    python tools/benchmark_agent.py [--configs=tiny,small] [--batch_size=256] [--image_size=64]
                                      [--parts=learner,latency,octo] [--cores=N] [--steps_per_call=4]

The last line is JSON {"figures": {name: {"value", "target"}}, "details": {...}} (`make bench`).

* Learner updates/s (one update = one gradient step of the critic, plus the actor on every
  `critic_actor_ratio`-th) for each config, with the critic reading cached embeddings (the CPU
  default) and with its own per-camera conv encoders on pixels: one learner step per call and,
  for the embedding critic, `--steps_per_call` steps per call (`Learner.steps`, lax.scan), each
  also as GFLOP/s (XLA's count) over the matmul limit measured in the same rounds (issue #11:
  >= 60% for the embedding critic). The pixel critic is timed one step per call only, as the
  stages run it (`AgentConfig.steps_per_dispatch`); its scanned calls, 3x slower per update,
  took most of `make bench`'s hour.
* Action latency through the acting policy (`ConRFTPolicy.act`, observation -> action): the
  backbone step by step (previous frame's keys/values cached) vs the whole window every step,
  one-step vs a 10-step head; and the head alone on a cached embedding. `--cores=1` measures
  it on one core.
* `octo`: action latency of an Octo-small backbone (the released widths: 256 px primary + 128 px
  wrist, window 2, whole window each step, random weights) vs our `small` backbone on the same
  frames (whole window, and step by step).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from vlarft.agents.actor import ConRFTPolicy
from vlarft.agents.config import get_config, loss_preset
from vlarft.agents.learner import Learner
from vlarft.agents.networks import ConsistencyHead, VLABackbone, make_backbone, sample_actions, tokenize
from vlarft.agents.octo_import import released_config
from vlarft.agents.observation import StateNormalizer
from vlarft.agents.process_settings import use_process_settings
from vlarft.tools.benchmark_utils import cost_gflop, interleaved, matmul_call, median_ratio, timed

CAMERAS = ("front", "wrist")
INSTRUCTION = "pick up the red cube"


def replay_like_batch(rng, batch: int, embedding: int, image_size: int, pixels: bool) -> dict:
    def obs():
        out = {"embedding": jnp.asarray(rng.normal(size=(batch, embedding)), jnp.float32),
               "state": jnp.asarray(rng.normal(size=(batch, 19)), jnp.float32)}
        if pixels:
            out.update({f"image_{c}": jnp.asarray(rng.integers(0, 255, (batch, image_size, image_size, 3)), jnp.uint8)
                        for c in CAMERAS})
        return out

    return {"observation": obs(), "next_observation": obs(),
            "action": jnp.asarray(rng.uniform(-1, 1, (batch, 7)), jnp.float32),
            "reward": jnp.zeros(batch, jnp.float32), "discount": jnp.ones(batch, jnp.float32),
            "mc_return": jnp.zeros(batch, jnp.float32), "intervention": jnp.zeros(batch, bool)}


def learner_figures(config_name: str, critic_input: str, batch: int, image_size: int, repeats: int,
                    steps_per_call: int, rounds: int = 3) -> dict:
    """Updates/s of one learner step per call (`Learner.step`) and, when `steps_per_call` > 1, of
    that many steps per call (`Learner.steps`, lax.scan; else the scanned figures are None), each
    with its GFLOP/s as a share of the matmul limit, all measured in interleaved rounds (a change
    of the machine's load hits them alike). Each call's metrics are read before the next call, as
    the stages' loops do (they check them)."""
    config = get_config(config_name)
    config = dataclasses.replace(config, critic=dataclasses.replace(config.critic, input=critic_input))
    loss = loss_preset("paper", "offline")
    learner = Learner(config, loss, 7, CAMERAS, np.zeros(19), np.ones(19), rows_per_source=(batch,))
    rng = np.random.default_rng(0)
    pixels = critic_input == "pixels"
    item = replay_like_batch(rng, batch * loss.critic_actor_ratio, config.backbone.width, image_size, pixels)
    scan_item = (replay_like_batch(rng, batch * loss.critic_actor_ratio * steps_per_call, config.backbone.width,
                                   image_size, pixels) if steps_per_call > 1 else None)
    holder = {"state": learner.init(jax.random.PRNGKey(0), item)}

    def one_step():  # each call's metrics read before the next, as the stages' loops do
        holder["state"], metrics = learner.step(holder["state"], item)
        return jax.device_get(metrics)

    def scanned():
        holder["state"], metrics = learner.steps(holder["state"], scan_item, steps_per_call)
        return jax.device_get(metrics)

    step_gflop = cost_gflop(learner._steps[True], holder["state"], item)
    scan_gflop = step_gflop * steps_per_call  # the same steps (XLA's count of a loop body is per trip)
    matmul, matmul_gflop = matmul_call()
    calls = {"matmul": matmul, "step": one_step, **({"scan": scanned} if steps_per_call > 1 else {})}
    s = interleaved(calls, rounds, repeats)
    updates = loss.critic_actor_ratio
    limit = [matmul_gflop / t for t in s["matmul"]]
    scan = s.get("scan")
    return {"updates_per_s": statistics.median(updates / t for t in s["step"]),
            "updates_per_s_scanned": statistics.median(updates * steps_per_call / t for t in scan) if scan else None,
            "gflop_per_update": step_gflop / updates,
            "share_of_matmul_limit": median_ratio([step_gflop / t for t in s["step"]], limit),
            "share_of_matmul_limit_scanned": median_ratio([scan_gflop / t for t in scan], limit) if scan else None,
            "matmul_limit_gflops": statistics.median(limit), "steps_per_call": steps_per_call}


def stage_steps_per_call(config_name: str, critic_input: str) -> int:
    """Learner steps per jitted call the stages use with this critic (`AgentConfig.steps_per_dispatch`:
    1 for pixel critics, whose scanned updates run slower on XLA CPU)."""
    config = get_config(config_name)
    return dataclasses.replace(config, critic=dataclasses.replace(config.critic, input=critic_input)).steps_per_dispatch()


def action_latency(config_name: str, image_size: int, repeats: int) -> dict:
    """Milliseconds from an observation to its action through `ConRFTPolicy.act` (JPEG round trip,
    backbone, head): step by step (the previous frame's keys/values cached) vs the whole window
    every step, 1-step and 10-step heads; and the head alone on an embedding."""
    config = get_config(config_name)
    backbone = VLABackbone(config.backbone, CAMERAS, 19)
    head = ConsistencyHead(config.head, 7)
    window = config.backbone.window
    images = {c: jnp.zeros((1, window, image_size, image_size, 3), jnp.uint8) for c in CAMERAS}
    states = jnp.zeros((1, window, 19), jnp.float32)
    ids, mask = tokenize([INSTRUCTION], config.backbone.max_text_tokens, config.backbone.vocab_size)
    bb_params = jax.jit(lambda key: backbone.init(key, images, states, ids, mask)["params"])(jax.random.PRNGKey(0))
    emb = jnp.zeros((1, config.backbone.width), jnp.float32)
    head_params = head.init(jax.random.PRNGKey(1), jnp.zeros((1, 7)), 1.0, emb, states[:, -1])["params"]
    rng = np.random.default_rng(0)
    observations = [{**{f"image_{c}": rng.integers(0, 256, (image_size, image_size, 3), dtype=np.uint8) for c in CAMERAS},
                     "state": rng.normal(size=19).astype(np.float32)} for _ in range(8)]

    def policy(steps: int, step_by_step: bool) -> ConRFTPolicy:
        return ConRFTPolicy(config, bb_params, head_params, cameras=CAMERAS, state_dim=19, action_dim=7,
                            normalizer=StateNormalizer.identity(19), instruction=INSTRUCTION, deterministic=False,
                            steps=steps, step_by_step=step_by_step)

    def latency(p: ConRFTPolicy, whole_step: bool = False) -> Callable[[], tuple[float, float]]:
        """One act on the next observation -> (wall, CPU) seconds, up to the action (as a control
        loop sees it; the caching `act` leaves running is waited for after the timing) or, with
        `whole_step`, up to the end of that caching too (the step's whole cost). The process's CPU
        time is what the step costs without the other loads of a shared box."""
        count = iter(range(10 ** 9))

        def call():
            wall, cpu = time.perf_counter(), time.process_time()
            p.act(observations[next(count) % len(observations)])
            if whole_step:
                p.ready()
            timing = time.perf_counter() - wall, time.process_time() - cpu
            p.ready()
            return timing

        return call

    policies = {f"{kind}_{steps}step": policy(steps, kind == "step_by_step")
                for kind in ("step_by_step", "whole_window") for steps in (1, 10)}
    calls = {name: latency(p) for name, p in policies.items()}
    calls["step_by_step_1step_with_caching"] = latency(policies["step_by_step_1step"], whole_step=True)
    for call in calls.values():
        call(), call()  # compile
    wall = {name: [] for name in calls}
    cpu = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            w, c = call()
            wall[name].append(w)
            cpu[name].append(c)
    figures = {f"{name}_ms": 1e3 * statistics.median(s) for name, s in wall.items()}
    figures.update({f"{name}_cpu_ms": 1e3 * statistics.median(s) for name, s in cpu.items()})
    figures["step_by_step_over_whole_window"] = median_ratio(wall["whole_window_1step"], wall["step_by_step_1step"])
    figures["step_by_step_over_whole_window_cpu"] = median_ratio(cpu["whole_window_1step"], cpu["step_by_step_1step"])
    for steps in (1, 10):
        from_embedding = jax.jit(lambda e, s, k, steps=steps: sample_actions(head.apply, head_params, e, s, k, config.head,
                                                                            7, steps=steps))
        key = jax.random.PRNGKey(2)
        figures[f"head_only_{steps}step_ms"] = 1e3 * timed(lambda: from_embedding(emb, states[:, -1], key), repeats)
    return figures


def octo_latency(repeats: int) -> dict:
    """Median wall (CPU) ms of `ConRFTPolicy.act` with an Octo-small backbone vs our `small` one, on
    the Octo-small camera sizes (front 256 px, wrist 128 px), every policy with a 1-step head."""
    sizes = {"front": 256, "wrist": 128}
    small = get_config("small")
    configs = {"octo_small": dataclasses.replace(small, backbone=released_config("small")), "vlarft_small": small}
    rng = np.random.default_rng(0)
    observations = [{**{f"image_{c}": rng.integers(0, 256, (s, s, 3), dtype=np.uint8) for c, s in sizes.items()},
                     "state": rng.normal(size=19).astype(np.float32)} for _ in range(4)]
    policies = {}
    for name, config in configs.items():
        window = config.backbone.window
        backbone = make_backbone(config.backbone, CAMERAS, 19)
        images = {c: jnp.zeros((1, window, s, s, 3), jnp.uint8) for c, s in sizes.items()}
        states = jnp.zeros((1, window, 19), jnp.float32)
        ids, mask = tokenize([INSTRUCTION], config.backbone.max_text_tokens, config.backbone.vocab_size)
        params = jax.jit(lambda key, b=backbone: b.init(key, images, states, ids, mask)["params"])(jax.random.PRNGKey(0))
        head = ConsistencyHead(config.head, 7)
        head_params = head.init(jax.random.PRNGKey(1), jnp.zeros((1, 7)), 1.0, jnp.zeros((1, config.backbone.width)),
                                states[:, -1])["params"]
        for step_by_step in ((False, True) if name == "vlarft_small" else (False,)):
            policies[f"{name}_{'step_by_step' if step_by_step else 'whole_window'}"] = ConRFTPolicy(
                config, params, head_params, cameras=CAMERAS, state_dim=19, action_dim=7,
                normalizer=StateNormalizer.identity(19), instruction=INSTRUCTION, step_by_step=step_by_step)
    wall = {name: [] for name in policies}
    cpu = {name: [] for name in policies}
    for name, policy in policies.items():
        policy.act(observations[0]), policy.ready()  # compile
    for i in range(repeats):
        for name, policy in policies.items():
            w, c = time.perf_counter(), time.process_time()
            policy.act(observations[i % len(observations)])
            wall[name].append(time.perf_counter() - w)
            cpu[name].append(time.process_time() - c)
            policy.ready()
    figures = {f"{name}_ms": 1e3 * statistics.median(s) for name, s in wall.items()}
    figures.update({f"{name}_cpu_ms": 1e3 * statistics.median(s) for name, s in cpu.items()})
    figures["octo_over_vlarft_whole_window"] = median_ratio(wall["octo_small_whole_window"],
                                                            wall["vlarft_small_whole_window"])
    return figures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="tiny,small")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps_per_call", type=int, default=4, help="learner steps per scanned call")
    parser.add_argument("--parts", default="learner,latency", help="comma-separated: learner, latency, octo")
    parser.add_argument("--cores", type=int, default=0, help="> 0: run on this many cores (e.g. 1 for a robot PC's share)")
    args = parser.parse_args(argv)
    use_process_settings()  # what the stages run with
    if args.cores:  # before JAX starts its CPU client, which sizes its thread pool from the affinity
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:args.cores])
    parts = args.parts.split(",")
    figures, details = {}, {}
    for name in args.configs.split(","):
        if "learner" in parts:
            emb = learner_figures(name, "embedding", args.batch_size, args.image_size, args.repeats,
                                  args.steps_per_call)
            pix = learner_figures(name, "pixels", args.batch_size, args.image_size, 1,
                                  stage_steps_per_call(name, "pixels"), rounds=2)
            for kind, f in (("embedding critic", emb), (f"pixel critic ({args.image_size}px)", pix)):
                scanned = (f"{f['steps_per_call']} steps per call (scan): {f['updates_per_s_scanned']:.2f} updates/s "
                           f"({f['share_of_matmul_limit_scanned']:.0%})" if f["updates_per_s_scanned"] is not None
                           else "timed one step per call only")
                print(f"[{name}] learner at batch {args.batch_size}, {kind}: {f['updates_per_s']:.2f} updates/s "
                      f"({f['share_of_matmul_limit']:.0%} of the matmul limit, {f['gflop_per_update']:.2f} GFLOP/update) | "
                      f"{scanned}; matmul limit now {f['matmul_limit_gflops']:.0f} GFLOP/s")
            details[name] = {"embedding_critic": emb, "pixel_critic": pix}
            figures[f"learner_{name}_share_of_matmul_limit"] = {
                "value": round(max(emb["share_of_matmul_limit"], emb["share_of_matmul_limit_scanned"] or 0.0), 3),
                "target": ">= 0.6"}
            figures[f"learner_{name}_updates_per_s"] = {
                "value": round(max(emb["updates_per_s"], emb["updates_per_s_scanned"] or 0.0), 2), "target": None}
            figures[f"learner_{name}_pixel_updates_per_s"] = {
                "value": round(max(pix["updates_per_s"], pix["updates_per_s_scanned"] or 0.0), 3),
                "target": ">= 5" if name == "tiny" else None}
        if "latency" in parts:
            lat = action_latency(name, args.image_size, args.repeats * 4)
            print(f"[{name}] action latency on {len(os.sched_getaffinity(0))} core(s), observation -> action, median "
                  f"wall (CPU) ms: step by step {lat['step_by_step_1step_ms']:.1f} ({lat['step_by_step_1step_cpu_ms']:.1f}) "
                  f"vs whole window {lat['whole_window_1step_ms']:.1f} ({lat['whole_window_1step_cpu_ms']:.1f}): "
                  f"x{lat['step_by_step_over_whole_window']:.2f} (CPU x{lat['step_by_step_over_whole_window_cpu']:.2f}) faster")
            print(f"[{name}] 10-step head: step by step {lat['step_by_step_10step_ms']:.1f} "
                  f"({lat['step_by_step_10step_cpu_ms']:.1f}) vs whole window {lat['whole_window_10step_ms']:.1f} "
                  f"({lat['whole_window_10step_cpu_ms']:.1f}); step by step with the caching after the action: "
                  f"{lat['step_by_step_1step_with_caching_ms']:.1f} ({lat['step_by_step_1step_with_caching_cpu_ms']:.1f}); "
                  f"head alone 1-step {lat['head_only_1step_ms']:.2f}, 10-step {lat['head_only_10step_ms']:.2f}")
            details.setdefault(name, {})["latency"] = lat
            figures[f"latency_{name}_step_by_step_cpu_ms"] = {"value": round(lat["step_by_step_1step_cpu_ms"], 2),
                                                               "target": "<= 20" if name == "small" else None}
    if "octo" in parts:
        octo = octo_latency(args.repeats * 4)
        print(f"[octo] action latency, 256 + 128 px, median wall (CPU) ms: Octo-small whole window "
              f"{octo['octo_small_whole_window_ms']:.1f} ({octo['octo_small_whole_window_cpu_ms']:.1f}) | our small "
              f"whole window {octo['vlarft_small_whole_window_ms']:.1f} ({octo['vlarft_small_whole_window_cpu_ms']:.1f}), "
              f"step by step {octo['vlarft_small_step_by_step_ms']:.1f} ({octo['vlarft_small_step_by_step_cpu_ms']:.1f}) | "
              f"Octo / ours whole window x{octo['octo_over_vlarft_whole_window']:.2f}")
        details["octo"] = octo
    print(json.dumps({"figures": figures, "details": details}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

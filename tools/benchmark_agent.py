"""Benchmark the agent: learner updates/s and action latency. Prints figures, asserts nothing.

    python tools/benchmark_agent.py [--configs=tiny,small] [--batch_size=256] [--image_size=64]

* Learner updates/s (one update = one gradient step of the critic, plus the actor on every
  `critic_actor_ratio`-th) for each config, with the critic reading cached embeddings (the CPU
  default) and with its own per-camera conv encoders on pixels; the ratio is printed.
* Action latency of the consistency head: one-step vs a 10-step sampler (ratio), with the
  backbone in the loop (acting from pixels) and without it (from a cached embedding).
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np

from vlarft.agents.config import get_config, loss_preset
from vlarft.agents.learner import Learner
from vlarft.agents.networks import ConsistencyHead, VLABackbone, sample_actions, tokenize
from vlarft.tools.benchmark_utils import timed

CAMERAS = ("front", "wrist")


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


def learner_updates_per_s(config_name: str, critic_input: str, batch: int, image_size: int, repeats: int) -> float:
    config = get_config(config_name)
    config = dataclasses.replace(config, critic=dataclasses.replace(config.critic, input=critic_input))
    loss = loss_preset("paper", "offline")
    learner = Learner(config, loss, 7, CAMERAS, np.zeros(19), np.ones(19), rows_per_source=(batch,))
    rng = np.random.default_rng(0)
    item = replay_like_batch(rng, batch * loss.critic_actor_ratio, config.backbone.width, image_size,
                             critic_input == "pixels")
    state = learner.init(jax.random.PRNGKey(0), item)
    holder = {"state": state}

    def one_step():
        holder["state"], metrics = learner.step(holder["state"], item)
        return metrics

    return loss.critic_actor_ratio / timed(one_step, repeats)


def action_latency(config_name: str, image_size: int, repeats: int) -> dict:
    config = get_config(config_name)
    backbone = VLABackbone(config.backbone, CAMERAS, 19)
    head = ConsistencyHead(config.head, 7)
    window = config.backbone.window
    images = {c: jnp.zeros((1, window, image_size, image_size, 3), jnp.uint8) for c in CAMERAS}
    states = jnp.zeros((1, window, 19), jnp.float32)
    ids, mask = tokenize(["pick up the red cube"], config.backbone.max_text_tokens, config.backbone.vocab_size)
    tmask = jnp.ones((1, window), bool)
    bb_params = backbone.init(jax.random.PRNGKey(0), images, states, ids, mask, tmask)["params"]
    emb = jnp.zeros((1, config.backbone.width), jnp.float32)
    head_params = head.init(jax.random.PRNGKey(1), jnp.zeros((1, 7)), 1.0, emb, states[:, -1])["params"]
    figures = {}
    for steps in (1, 10):
        from_embedding = jax.jit(lambda e, s, k, steps=steps: sample_actions(head.apply, head_params, e, s, k, config.head, 7,
                                                                            steps=steps))
        from_pixels = jax.jit(lambda im, st, k, steps=steps: sample_actions(
            head.apply, head_params, backbone.apply({"params": bb_params}, im, st, ids, mask, tmask), st[:, -1], k,
            config.head, 7, steps=steps))
        key = jax.random.PRNGKey(2)
        figures[f"head_only_{steps}step_ms"] = 1e3 * timed(lambda: from_embedding(emb, states[:, -1], key), repeats)
        figures[f"with_backbone_{steps}step_ms"] = 1e3 * timed(lambda: from_pixels(images, states, key), repeats)
    return figures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="tiny,small")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    report = {}
    for name in args.configs.split(","):
        emb = learner_updates_per_s(name, "embedding", args.batch_size, args.image_size, args.repeats)
        pix = learner_updates_per_s(name, "pixels", args.batch_size, args.image_size, max(1, args.repeats // 2))
        lat = action_latency(name, args.image_size, args.repeats * 4)
        print(f"[{name}] learner updates/s at batch {args.batch_size}: embedding critic {emb:8.2f} | "
              f"pixel critic ({args.image_size}px) {pix:8.2f} | ratio {emb / pix:6.1f}x")
        print(f"[{name}] action latency: head only 1-step {lat['head_only_1step_ms']:.2f} ms, 10-step "
              f"{lat['head_only_10step_ms']:.2f} ms (x{lat['head_only_10step_ms'] / lat['head_only_1step_ms']:.1f}); "
              f"with backbone 1-step {lat['with_backbone_1step_ms']:.2f} ms, 10-step {lat['with_backbone_10step_ms']:.2f} ms "
              f"(x{lat['with_backbone_10step_ms'] / lat['with_backbone_1step_ms']:.1f})")
        report[name] = {"updates_per_s_embedding_critic": emb, "updates_per_s_pixel_critic": pix, **lat}
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

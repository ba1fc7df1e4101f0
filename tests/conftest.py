"""Shared test helpers: small real episodes built through the project's own EpisodeBuilder, random
network parameters."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import jax
import jax.numpy as jnp
import numpy as np
from vlarft.datasets.episode_builder import EpisodeBuilder
from vlarft.datasets.schema import EpisodeSpec
from vlarft.robot_io.teleop.base import TeleopCommand

SMALL_SPEC = EpisodeSpec(cameras={"front": (16, 16), "wrist": (16, 16)})


def make_episode(episode_id="ep", length=5, terminal=True, seed=0, spec=SMALL_SPEC, success=None):
    """An episode of `length` transitions with random images/states/actions."""
    rng = np.random.default_rng(seed)

    def image(h, w):  # a smooth random gradient: JPEG keeps it within a few grey levels
        y, x = np.mgrid[0:h, 0:w]
        colour = rng.uniform(40, 200, 3)
        slope = rng.uniform(-2, 2, (2, 3))
        return np.clip(colour + y[..., None] * slope[0] + x[..., None] * slope[1], 0, 255).astype(np.uint8)

    def obs():
        out = {f"image_{c}": image(h, w) for c, (h, w) in spec.cameras.items()}
        out["state"] = rng.normal(size=spec.state_dim).astype(np.float32)
        return out

    builder = EpisodeBuilder(spec, episode_id=episode_id, task="unit", instruction="do the unit task",
                             robot="test", operator="pytest")
    builder.start(obs())
    for t in range(length):
        last = t == length - 1
        builder.add(rng.uniform(-1, 1, spec.action_dim), float(last and terminal), obs(),
                    terminated=last and terminal, intervention=bool(t % 2))
    return builder.finish(success=terminal if success is None else success)


def int16le(*values):
    """Hand-built little-endian int16 bytes."""
    out = []
    for v in values:
        v &= 0xFFFF
        out += [v & 0xFF, v >> 8]
    return out


def random_params(module, *args, seed=0, **kwargs):
    """Random parameters shaped like `module.init`'s, without compiling the initialisers (slow on CPU)."""
    shapes = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), *args, **kwargs))["params"]
    rng = np.random.default_rng(seed)
    fill = lambda x: jnp.asarray(rng.normal(size=x.shape) / np.sqrt(max(np.prod(x.shape[:-1]), 1)), x.dtype)
    return jax.tree_util.tree_map(fill, shapes)


class LiftingOperator:
    """A stand-in human who lifts straight up with the gripper closed, engaged every step."""

    def reset(self):
        pass

    def poll(self):
        return TeleopCommand(action=np.array([0, 0, 1, 0, 0, 0, 1], np.float32), engaged=True, buttons=frozenset())

    def close(self):
        pass

"""Shared test helpers: small real episodes built through the project's own EpisodeBuilder, random
network parameters, and the session's recorded demos, SFT run and embedded dataset (the stage
fixtures `demos`, `sft_run`, `embedded`, built once for every module that asks)."""

import atexit
import os
import shutil
import signal
import tempfile

# A suite started in the background by a shell script (`make test &`) inherits SIGINT ignored, and
# every process it starts would too: the Ctrl-C tests need Ctrl-C delivered.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
# One compilation cache for the session, in a private temporary folder deleted at exit: the tests
# and the command lines they start share programs (a stage's update, its acting step) as a user's
# runs do, and leave the user's own cache folder alone. The first test to need a program compiles
# it, as a first run does. (A session of the two heaviest files: 448 s against 492 s without it.)
if "VLARFT_COMPILATION_CACHE" not in os.environ:
    os.environ["VLARFT_COMPILATION_CACHE"] = tempfile.mkdtemp(prefix="vlarft-tests-xla-")  # mode 0700
    atexit.register(shutil.rmtree, os.environ["VLARFT_COMPILATION_CACHE"], ignore_errors=True)

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from vlarft.agents import training
from vlarft.agents.compilation_cache import enable_compilation_cache
from vlarft.agents.config import get_config
from vlarft.agents.process_settings import use_process_settings
from vlarft.datasets.episode_builder import EpisodeBuilder
from vlarft.datasets.replay.packing import layout_of_stored
from vlarft.datasets.schema import EpisodeSpec
from vlarft.pipelines.convert_demos import convert
from vlarft.pipelines.embed_dataset import embed_dataset
from vlarft.robot_io.teleop.base import TeleopCommand
from vlarft.tools.record_demos import record

use_process_settings()  # the settings the command lines use, in the tests' process and those it starts
enable_compilation_cache()  # the tests' own process too

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


def sample_all(client, table, count, limit=3000):
    """Samples a Reverb table (uniform, with replacement, unseeded) until every one of its `count`
    items has been seen; returns them unpacked."""
    seen = {}
    layout = layout_of_stored(client.server_info()[table].signature)  # items are stored packed
    for sample in client.sample(table, limit, emit_timesteps=False, unpack_as_table_signature=True):
        seen[int(sample.info.key)] = layout.unpack(sample.data)
        if len(seen) == count:
            return list(seen.values())
    raise AssertionError(f"saw {len(seen)} of {count} items of {table!r} in {limit} samples")


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


# --- the stage fixtures shared by test_training and test_agents (built once per session) -----------

QUIET = lambda msg: None  # noqa: E731


def run_train_main(argv) -> int:
    """`agents/train.py`'s main in this process (no interpreter start-up to pay), with the SIGTERM
    handler it installs for its process put back afterwards."""
    from vlarft.agents import train

    sigterm = signal.getsignal(signal.SIGTERM)
    try:
        return train.main(list(argv))
    finally:
        signal.signal(signal.SIGTERM, sigterm)


def tiny_config(**train):
    config = get_config("tiny")
    defaults = dict(batch_size=32, log_every=10, eval_every=0, checkpoint_every=50)
    return dataclasses.replace(config, train=dataclasses.replace(config.train, **{**defaults, **train}))


@pytest.fixture(scope="session")
def demos(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    # lossless raw frames: the acting test feeds them to the policy as live frames
    record("sim:pick_cube", "scripted", 12, str(root / "raw"), image_size=32, progress=False, lossless_frames=True)
    dataset = convert([str(root / "raw")], str(root / "data"), "pick32", validation_fraction=0.25, log=QUIET)
    return root, dataset.dataset_dir


@pytest.fixture(scope="session")
def sft_run(demos):
    root, dataset_dir = demos
    workdir = str(root / "sft")
    config = tiny_config()
    options = lambda steps: training.StageOptions(dataset_dir=dataset_dir, workdir=workdir, steps=steps,
                                                  eval_episodes=0, show_progress=False)
    start = training.run_sft(options(0), config)  # evaluation of the untrained policy
    end = training.run_sft(options(250), config)  # resumes from the step-0 checkpoint
    return workdir, start, end


@pytest.fixture(scope="session")
def embedded(demos, sft_run):
    root, dataset_dir = demos
    return embed_dataset(dataset_dir, sft_run[0], str(root / "data"), log=QUIET)

"""Benchmark: SFT on a dataset larger than its memory budget — streamed vs held in memory.

    python tools/benchmark_streaming.py [--steps=200000] [--image_size=64] [--sft_steps=60]
                                        [--data_dir=DIR] [--modes=stream,memory]

Generates (once, cached in `--data_dir`) an RLDS dataset of `--steps` steps with two cameras
through the real Beam conversion job (synthetic smooth frames, 100-step episodes), then runs the
SFT stage (tiny config, batch 64) on it in a child process per loading mode
(`TrainConfig.data_loading`: "stream" reads the TFDS files with tf.data, "memory" decodes the
whole split into RAM first) and prints each one's training steps/s (the median logged rate,
compiling left out), the whole stage's seconds (reading the data, training, evaluating the
held-out split) and its peak RSS, and the dataset's decoded size, so the figures compare within
one command. The last line is one JSON object ({"figures": {name: {"value", "target"}}, "details"}).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from vlarft.agents.process_settings import use_process_settings

EPISODE_LENGTH = 100
EPISODES_PER_INPUT = 50


def synthetic_episodes(spec, first: int, count: int, length: int):
    """`count` episodes with smooth moving frames (JPEG-compressible like camera images) whose
    actions follow the state, numbered from `first`."""
    from vlarft.datasets.episode_builder import EpisodeBuilder

    size = next(iter(spec.cameras.values()))[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    for index in range(first, first + count):
        rng = np.random.default_rng(index)
        builder = EpisodeBuilder(spec, episode_id=f"synthetic{index:06d}", task="pick_cube",
                                 instruction="pick up the red cube", robot="synthetic")

        def observation(t):
            phase = t / length + index * 0.01
            frame = np.stack([np.sin(6 * xx + phase * 6), np.cos(5 * yy - phase * 4), np.sin(4 * (xx + yy) + phase)], -1)
            image = ((frame + 1) * 127.5).astype(np.uint8)
            return {f"image_{cam}": image for cam in spec.cameras} | {
                "state": rng.normal(size=spec.state_dim).astype(np.float32)}

        current = observation(0)
        builder.start(current)
        for t in range(length - 1):
            action = np.tanh(current["state"][:spec.action_dim])
            current = observation(t + 1)
            builder.add(action, 0.0, current, terminated=False)
        yield builder.finish(success=False)


@dataclasses.dataclass
class SyntheticReader:
    """Beam reader: input "synthetic:<first>" -> EPISODES_PER_INPUT generated episodes."""
    spec: object

    def __call__(self, name: str):
        yield from synthetic_episodes(self.spec, int(name.split(":")[1]), EPISODES_PER_INPUT, EPISODE_LENGTH)


def generate(data_dir: Path, steps: int, image_size: int) -> str:
    from vlarft.datasets.schema import EpisodeSpec
    from vlarft.pipelines.rlds_job import run_rlds_job

    name = f"stream{steps}_{image_size}px"
    dataset_dir = data_dir / name / "1.0.0"
    if (dataset_dir / "dataset_info.json").exists():
        return str(dataset_dir)
    spec = EpisodeSpec(cameras={"front": (image_size, image_size), "wrist": (image_size, image_size)})
    episodes = -(-steps // EPISODE_LENGTH)
    inputs = [f"synthetic:{first}" for first in range(0, episodes, EPISODES_PER_INPUT)]
    start = time.perf_counter()
    run_rlds_job(inputs, SyntheticReader(spec), spec, str(data_dir), name, validation_fraction=0.02,
                 num_buckets=max(1, episodes // 100), log=lambda m: print(m, file=sys.stderr))
    print(f"generated {episodes} episodes ({steps} steps) in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return str(dataset_dir)


def run_child(dataset_dir: str, mode: str, sft_steps: int) -> dict:
    """SFT in a fresh process (so its peak RSS is its own)."""
    with tempfile.TemporaryDirectory() as workdir:
        out = subprocess.run([sys.executable, __file__, "--child", dataset_dir, mode, str(sft_steps), workdir],
                             capture_output=True, text=True)
        if out.returncode:
            raise RuntimeError(f"SFT in mode {mode} failed:\n{out.stderr[-3000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])


def logged_rates(workdir: str) -> list[float]:
    """The SFT run's logged train/learner_steps_per_s values, in step order."""
    import tensorflow as tf
    from tensorboard.backend.event_processing import event_accumulator

    events = event_accumulator.EventAccumulator(os.path.join(workdir, "tensorboard"),
                                                size_guidance={"tensors": 0})
    events.Reload()
    return [float(tf.make_ndarray(e.tensor_proto)) for e in events.Tensors("train/learner_steps_per_s")]


def child(dataset_dir: str, mode: str, sft_steps: int, workdir: str) -> None:
    from vlarft.agents import training
    from vlarft.agents.config import get_config

    log_every = max(1, sft_steps // 6)
    config = get_config("tiny")
    config = dataclasses.replace(config, train=dataclasses.replace(
        config.train, batch_size=64, data_loading=mode, log_every=log_every, eval_every=0, checkpoint_every=10 ** 9))
    options = training.StageOptions(dataset_dir=dataset_dir, workdir=workdir, steps=sft_steps, eval_episodes=0,
                                    show_progress=False)
    start = time.perf_counter()
    training.run_sft(options, config)
    wall_s = time.perf_counter() - start
    rates = logged_rates(workdir)[1:]  # the first interval includes compiling the update
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"mode": mode, "wall_s": wall_s, "sft_steps": sft_steps, "steps_per_s": float(np.median(rates)),
                      "peak_rss_mb": peak_mb}))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        use_process_settings()  # what the stages run with
        child(argv[1], argv[2], int(argv[3]), argv[4])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200_000, help="steps of the generated dataset")
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--sft_steps", type=int, default=60)
    parser.add_argument("--data_dir", default=os.path.join(tempfile.gettempdir(), "vlarft-bench-streaming"))
    parser.add_argument("--modes", default="stream,memory")
    args = parser.parse_args(argv)

    from vlarft.agents.step_data import decoded_split_bytes

    dataset_dir = generate(Path(args.data_dir), args.steps, args.image_size)
    decoded_mb = sum(decoded_split_bytes(dataset_dir, s) for s in ("train", "validation")) / 2 ** 20
    figures = {"dataset_steps": args.steps, "image_size": args.image_size, "decoded_dataset_mb": decoded_mb}
    for mode in args.modes.split(","):
        result = run_child(dataset_dir, mode, args.sft_steps)
        rate = result["steps_per_s"]  # median of the logged rates, compiling left out
        figures[f"{mode}_sft_steps_per_s"] = rate
        figures[f"{mode}_peak_rss_mb"] = result["peak_rss_mb"]
        figures[f"{mode}_wall_s"] = result["wall_s"]
        print(f"{mode:>6}: {rate:6.2f} SFT steps/s, whole stage {result['wall_s']:6.1f} s, "
              f"peak RSS {result['peak_rss_mb']:8.0f} MB (decoded dataset {decoded_mb:.0f} MB)")
    if "stream_sft_steps_per_s" in figures and "memory_sft_steps_per_s" in figures:
        figures["stream_over_memory_steps_ratio"] = figures["stream_sft_steps_per_s"] / figures["memory_sft_steps_per_s"]
        print(f"stream / memory: {figures['stream_over_memory_steps_ratio']:.2f}x steps/s, "
              f"{figures['stream_peak_rss_mb'] / figures['memory_peak_rss_mb']:.2f}x peak RSS")
    summary = {}
    if "stream_peak_rss_mb" in figures:
        summary["sft_stream_peak_rss_over_decoded_dataset"] = {
            "value": round(figures["stream_peak_rss_mb"] / decoded_mb, 3), "target": "<= 0.5"}
        summary["sft_stream_peak_rss_mb"] = {"value": round(figures["stream_peak_rss_mb"]), "target": None}
    if "stream_over_memory_steps_ratio" in figures:
        summary["sft_stream_over_memory_steps"] = {"value": round(figures["stream_over_memory_steps_ratio"], 3),
                                                   "target": None}
    print(json.dumps({"figures": summary, "details": figures}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

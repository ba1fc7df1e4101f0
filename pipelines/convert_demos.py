"""Beam job: teleoperated demos (raw .npz episodes or HIL-SERL pickles) -> RLDS dataset (TFDS).

    python pipelines/convert_demos.py --input=DEMO_DIR --output_dir=DATA_DIR --dataset=NAME \\
        [--validation_fraction=0.1] [--num_shards=0] [standard Beam pipeline options]

Runs on Beam's DirectRunner by default; any runner is chosen with standard pipeline options,
e.g. `--runner=apache_beam.runners.dask.dask_runner.DaskRunner --dask_client_address=HOST:PORT`.
The dataset is assembled in a hidden `.incomplete-<version>` folder and moved into
`DATA_DIR/NAME/<version>` only when complete, so a failed run never damages a good dataset.
Beside the TFDS files it writes `dataset_statistics.json`, `dead_letters.jsonl` (inputs that
could not be converted, with the reason) and `conversion.json` (what was done).
The last line of standard output is the dataset directory, for `tfds.builder_from_directory`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Sequence

from vlarft.datasets import statistics
from vlarft.datasets.hilserl_pickle import PickleImportConfig
from vlarft.datasets.schema import EpisodeSpec, tfds_features
from vlarft.pipelines import rlds_writer
from vlarft.pipelines.sources import discover_inputs, infer_spec

EPISODES_PER_SHARD = 100  # raw 128x128 two-camera episodes are ~0.5-1 MB as JPEG


class ConversionError(RuntimeError):
    """The conversion produced no dataset (nothing readable, or the pipeline failed)."""


@dataclasses.dataclass
class ConversionResult:
    dataset_dir: str
    spec: EpisodeSpec
    episodes: dict[str, int]  # split -> episodes
    dead_letters: list[dict]
    runner: str
    wall_s: float


def convert(inputs: Sequence[str], output_dir: str, dataset: str, *, version: str = "1.0.0",
            validation_fraction: float = 0.1, num_shards: int = 0,
            pickle_config: PickleImportConfig = PickleImportConfig(),
            pipeline_args: Sequence[str] = (), log=print) -> ConversionResult:
    """Converts demo files into an RLDS dataset at `output_dir/dataset/version`."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    start = time.time()
    if not re.fullmatch(r"[a-z][a-z0-9_]*", dataset):
        raise ValueError(f"--dataset={dataset!r}: use snake_case (lowercase letters, digits, _)")
    files = discover_inputs(inputs)
    if not files:
        raise ConversionError(f"no input files (*.npz, *.pkl) found in {list(inputs)}")
    try:
        spec = infer_spec(files, pickle_config)
    except ValueError as e:
        raise ConversionError(str(e)) from None
    final_dir = Path(output_dir).absolute() / dataset / version
    work_dir = final_dir.parent / f".incomplete-{version}"
    shutil.rmtree(work_dir, ignore_errors=True)
    work_dir.mkdir(parents=True)
    num_buckets = num_shards or max(1, math.ceil(len(files) / EPISODES_PER_SHARD))
    config = rlds_writer.WriteConfig(dataset=dataset, work_dir=str(work_dir), spec=spec,
                                     num_buckets=num_buckets, validation_fraction=validation_fraction,
                                     pickle_config=pickle_config)
    options = PipelineOptions(list(pipeline_args))
    runner = options.view_as(StandardOptions).runner or "DirectRunner"
    log(f"Converting {len(files)} file(s) into {final_dir} on {runner} ({num_buckets} shard bucket(s))...")
    pipeline = beam.Pipeline(options=options)
    _ = pipeline | "Inputs" >> beam.Create(files) | "ToRlds" >> rlds_writer.ConvertToRlds(config)
    result = pipeline.run()
    try:
        result.wait_until_finish()
    finally:
        if getattr(result, "client", None) is not None:  # the Dask runner's client
            result.client.close()
    dead = _read_dead_letters(work_dir)
    episodes = _finalize(work_dir, config, dead)
    report = {"inputs": files, "runner": runner, "spec": json.loads(spec.to_json()),
              "episodes": episodes, "dead_letters": len(dead), "version": version}
    statistics.write_json_atomic(work_dir / "conversion.json", report)
    _swap_into_place(work_dir, final_dir)
    return ConversionResult(dataset_dir=str(final_dir), spec=spec, episodes=episodes,
                            dead_letters=dead, runner=runner, wall_s=time.time() - start)


def _read_dead_letters(work_dir: Path) -> list[dict]:
    path = work_dir / rlds_writer.DEAD_LETTER_FILE
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _finalize(work_dir: Path, config: rlds_writer.WriteConfig, dead: list[dict]) -> dict[str, int]:
    """Numbers the written shards contiguously and writes the TFDS metadata."""
    import tensorflow_datasets as tfds

    plan = json.loads((work_dir / rlds_writer.PLAN_FILE).read_text())
    split_infos, episodes = [], {}
    for split in rlds_writer.SPLITS:
        buckets = [(b, n) for b, n in enumerate(plan["bucket_lengths"][split]) if n]
        for index, (bucket, _) in enumerate(buckets):
            written = work_dir / rlds_writer.shard_name(config.dataset, split, bucket, config.num_buckets)
            if not written.exists():
                raise ConversionError(f"the pipeline did not write {written}")
            written.rename(work_dir / rlds_writer.shard_name(config.dataset, split, index, len(buckets)))
        if buckets:
            files = [work_dir / rlds_writer.shard_name(config.dataset, split, i, len(buckets))
                     for i in range(len(buckets))]
            split_infos.append(tfds.core.SplitInfo(
                name=split, shard_lengths=[n for _, n in buckets],
                num_bytes=sum(f.stat().st_size for f in files)))
            episodes[split] = sum(n for _, n in buckets)
    if not split_infos:
        reasons = "\n  ".join(f"{d['file']}: {d['reason']}" for d in dead[:20])
        raise ConversionError(f"no episode could be converted; dead letters in {work_dir}:\n  {reasons}")
    tfds.folder_dataset.write_metadata(
        data_dir=str(work_dir), features=tfds_features(config.spec), split_infos=split_infos,
        filename_template=None, check_data=False,
        description="Teleoperated robot episodes in RLDS format (vlarft schema).")
    return episodes


def _swap_into_place(work_dir: Path, final_dir: Path) -> None:
    """Replaces `final_dir` by `work_dir`; the old dataset stays on disk until the new one is in."""
    old = final_dir.with_name(f".replaced-{final_dir.name}-{os.getpid()}")
    if final_dir.exists():
        final_dir.rename(old)
    work_dir.rename(final_dir)
    shutil.rmtree(old, ignore_errors=True)


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", action="append", required=True,
                        help="a directory, file or glob of demos (.npz raw episodes, .pkl HIL-SERL); repeatable")
    parser.add_argument("--output_dir", required=True, help="TFDS data directory")
    parser.add_argument("--dataset", required=True, help="dataset name (snake_case)")
    parser.add_argument("--version", default="1.0.0", help="dataset version (default 1.0.0)")
    parser.add_argument("--validation_fraction", type=float, default=0.1,
                        help="share of episodes in the validation split (default 0.1)")
    parser.add_argument("--num_shards", type=int, default=0,
                        help=f"shard buckets per split; 0 = one per {EPISODES_PER_SHARD} input files")
    group = parser.add_argument_group("HIL-SERL pickle inputs")
    group.add_argument("--task", default="unknown", help="task name for pickle episodes")
    group.add_argument("--instruction", default="do the task", help="language instruction for pickle episodes")
    group.add_argument("--camera_names", default="",
                       help="rename pickle image keys: 'side_policy_256:front,wrist_1:wrist'")
    group.add_argument("--ignore_keys", default="", help="comma-separated observation keys to drop")
    group.add_argument("--raw_rewards", action="store_true", help="keep rewards instead of 1[reward > 0]")
    group.add_argument("--robot", default="franka", help="robot name for pickle episodes")
    return parser.parse_known_args(argv)


def pickle_config_from_args(args: argparse.Namespace) -> PickleImportConfig:
    renames = dict(pair.split(":", 1) for pair in args.camera_names.split(",") if pair)
    ignore = tuple(k for k in args.ignore_keys.split(",") if k)
    return PickleImportConfig(task=args.task, instruction=args.instruction, camera_names=renames,
                              ignore_keys=ignore, binary_reward=not args.raw_rewards, robot=args.robot)


def main(argv: Sequence[str] | None = None) -> int:
    args, beam_args = parse_args(sys.argv[1:] if argv is None else argv)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # stdout's last line is the result
    try:
        result = convert(args.input, args.output_dir, args.dataset, version=args.version,
                         validation_fraction=args.validation_fraction, num_shards=args.num_shards,
                         pickle_config=pickle_config_from_args(args), pipeline_args=beam_args, log=log)
    except (ConversionError, ValueError) as e:
        log(f"error: {e}")
        return 1
    for d in result.dead_letters:
        log(f"dead letter: {d['file']}" + (f" [{d['episode_id']}]" if d["episode_id"] else "") + f": {d['reason']}")
    counts = ", ".join(f"{n} {split}" for split, n in result.episodes.items())
    log(f"Converted {counts} episode(s); {len(result.dead_letters)} dead letter(s); "
        f"{result.wall_s:.1f} s on {result.runner}.")
    print(result.dataset_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())

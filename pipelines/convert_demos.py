"""Beam job: teleoperated demos (raw .npz episodes or HIL-SERL pickles) -> RLDS dataset (TFDS).

    python pipelines/convert_demos.py --input=DEMO_DIR --output_dir=DATA_DIR --dataset=NAME \\
        [--validation_fraction=0.1] [--num_shards=0] [--allow_pickles] [--overwrite] [Beam options]

Runs on Beam's DirectRunner by default; any runner is chosen with standard pipeline options,
e.g. `--runner=apache_beam.runners.dask.dask_runner.DaskRunner --dask_client_address=HOST:PORT`.
The dataset is assembled in a hidden `.incomplete-<version>` folder and moved into
`DATA_DIR/NAME/<version>` only when complete, so a failed run never damages a good dataset; an
existing `DATA_DIR/NAME/<version>` is refused unless `--overwrite` is given.
Beside the TFDS files it writes `dataset_statistics.json`, `dead_letters.jsonl` (inputs that
could not be converted, with the reason) and `conversion.json` (what was done).
The last line of standard output is the dataset directory, for `tfds.builder_from_directory`.
HIL-SERL/ConRFT `.pkl` demos are read only with `--allow_pickles` (loading a pickle can run code;
they are then read with a restricted, data-only unpickler); without it they are dead-lettered.
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
from typing import Sequence

from vlarft.datasets.hilserl_pickle import PickleImportConfig
from vlarft.pipelines.rlds_job import ConversionError, JobResult, report, run_rlds_job
from vlarft.pipelines.sources import discover_inputs, infer_spec, read_episodes, split_unreadable_names

EPISODES_PER_SHARD = 100  # raw 128x128 two-camera episodes are ~0.5-1 MB as JPEG


def convert(inputs: Sequence[str], output_dir: str, dataset: str, *, version: str = "1.0.0",
            validation_fraction: float = 0.1, num_shards: int = 0,
            pickle_config: PickleImportConfig = PickleImportConfig(), allow_pickles: bool = False,
            overwrite: bool = False, pipeline_args: Sequence[str] = (), log=print,
            progress: bool = False) -> JobResult:
    """Converts demo files into an RLDS dataset at `output_dir/dataset/version`; pickles are read
    only when `allow_pickles` (restricted unpickler), else dead-lettered; an existing dataset
    there is replaced only when `overwrite`; `progress` draws a bar of episodes read."""
    files, unreadable_names = split_unreadable_names(discover_inputs(inputs))
    if not files:
        raise ConversionError(f"no input files (*.npz, *.pkl) found in {list(inputs)}"
                              + "".join(f"\n  {d.file}: {d.reason}" for d in unreadable_names))
    try:
        spec = infer_spec(files, pickle_config, allow_pickles)
    except ValueError as e:
        raise ConversionError(str(e)) from None
    return run_rlds_job(
        files, functools.partial(read_episodes, spec=spec, pickle_config=pickle_config,
                                 allow_pickles=allow_pickles), spec,
        output_dir, dataset, version=version, validation_fraction=validation_fraction,
        num_buckets=num_shards or max(1, math.ceil(len(files) / EPISODES_PER_SHARD)),
        pipeline_args=pipeline_args, log=log, verb="Converting", overwrite=overwrite, dead_letters=unreadable_names,
        progress=progress, expected_episodes=len(files) if all(f.endswith(".npz") for f in files) else None)


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
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing OUTPUT_DIR/DATASET/VERSION (kept until the new one is complete)")
    parser.add_argument("--num_shards", type=int, default=0,
                        help=f"shard buckets per split; 0 = one per {EPISODES_PER_SHARD} input files")
    group = parser.add_argument_group("HIL-SERL pickle inputs")
    group.add_argument("--allow_pickles", action="store_true",
                       help="read the .pkl/.pickle inputs (loading a pickle can run code: only for files you "
                            "trust; they are read with a restricted, data-only unpickler); without it they "
                            "are dead-lettered unread")
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
                         pickle_config=pickle_config_from_args(args), allow_pickles=args.allow_pickles,
                         overwrite=args.overwrite, pipeline_args=beam_args, log=log)
    except (ConversionError, OSError, ValueError) as e:
        log(f"error: {e}")
        return 1
    report(result, "Converted", log)
    return 0


if __name__ == "__main__":
    sys.exit(main())

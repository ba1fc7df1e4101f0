"""Beam job: a LeRobotDataset v3.0 directory -> an RLDS dataset in our schema (TFDS).

    python -m vlarft.pipelines.lerobot_import SRC_LEROBOT_DIR --out=DATA_DIR [--dataset=NAME] \\
        [--version=1.0.0] [--validation_fraction=0] [--overwrite] [Beam options]

Each episode of the source is one work item: its rows are read from the data parquet, its camera
frames decoded from the MP4s at `from_timestamp + timestamp` (lerobot's 1e-4 s tolerance), and
it is written through the same runner-agnostic RLDS writer as the demo conversion (DirectRunner
by default, any runner with standard Beam options). The field mapping is `datasets/lerobot_mapping.py`.
The source is only read. The dataset is assembled beside its final place and swapped in when
complete; an existing one is refused unless `--overwrite`. A dataset-wide problem (no
meta/info.json, another codebase_version, no state/action feature) stops the job with an error
naming the dataset and field; a bad episode (missing video or data file, a declared feature
missing from the parquet, a shape unlike info.json's, frames not found, values our schema
refuses) is a dead letter naming the episode and field, and the others convert. Splits follow
info.json `splits` ("train" and "validation"/"val"/"test"; other episodes go to train), and
`--validation_fraction` holds out a share of the train episodes. The last line of standard
output is the dataset directory.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from vlarft.datasets import lerobot_format, lerobot_mapping, lerobot_video
from vlarft.datasets.lerobot_format import LeRobotFormatError, LeRobotMeta
from vlarft.datasets.schema import Episode, validate_episode
from vlarft.pipelines.rlds_job import ConversionError, JobResult, report, run_rlds_job, source_out_parser
from vlarft.pipelines.sources import DeadLetter

EPISODES_PER_SHARD = 100
VALIDATION_SPLIT_NAMES = ("validation", "val", "test")


class LeRobotEpisodeReader:
    """`"<root>#<episode index>"` -> that episode in our schema, or a dead letter."""

    def __init__(self, meta: LeRobotMeta, layout: lerobot_mapping.ImportLayout, dataset_name: str,
                 tolerance_s: float = 1e-4):
        self.meta, self.layout, self.dataset_name, self.tolerance_s = meta, layout, dataset_name, tolerance_s

    def __call__(self, item: str) -> Iterator[Episode | DeadLetter]:
        index = int(item.rsplit("#", 1)[1])
        try:
            episode = self.read(index)
            yield validate_episode(episode, self.layout.spec)
        except LeRobotFormatError as e:
            yield DeadLetter(file=item, reason=str(e), episode_id=f"{self.dataset_name}_{index:06d}")
        except (ValueError, OSError) as e:  # SchemaError names the step and field; OSError: an unreadable image
            yield DeadLetter(file=item, reason=f"LeRobot dataset {self.meta.root!r}, episode {index}: {e}",
                             episode_id=getattr(e, "episode_id", "") or f"{self.dataset_name}_{index:06d}")

    def read(self, index: int) -> Episode:
        meta, row = self.meta, self.meta.episodes[index]
        columns = lerobot_format.read_episode_table(meta, index)
        images = {}
        for cam, key in self.layout.cameras.items():
            feature = meta.features[key]
            if feature["dtype"] == "image":
                images[cam] = lerobot_mapping.decode_image_column(columns[key])
                continue
            spans = [f"videos/{key}/{c}" for c in ("chunk_index", "file_index", "from_timestamp")]
            if any(row.get(c) is None for c in spans):
                raise LeRobotFormatError(f"meta/episodes lacks {spans}", dataset=meta.root, episode=index, field=key)
            path = meta.video_file(row, key)
            if not path.is_file():
                raise LeRobotFormatError(f"video file {path} is missing", dataset=meta.root, episode=index, field=key)
            try:
                # frame_index / fps: exact where float32 `timestamp` (checked equal) drifts past ~2000 s
                images[cam] = lerobot_video.decode_frames(
                    path, row[f"videos/{key}/from_timestamp"] + columns["frame_index"] / meta.fps, self.tolerance_s)
            except lerobot_video.VideoDecodeError as e:
                raise LeRobotFormatError(str(e), dataset=meta.root, episode=index, field=key) from None
            want = tuple(self.layout.spec.cameras[cam])
            if images[cam].shape[1:3] != want:
                raise LeRobotFormatError(f"frames of {images[cam].shape[1:3]} in {path}, info.json declares {want}",
                                         dataset=meta.root, episode=index, field=key)
        return lerobot_mapping.episode_from_frames(meta, self.layout, index, columns, images, self.dataset_name)


def split_of_episodes(meta: LeRobotMeta, keep_train_open: bool) -> dict[str, str]:
    """episode id -> split from info.json `splits` ("start:end" ranges); with `keep_train_open`
    the train episodes are left to the validation-fraction choice."""
    splits = {}
    for name, span in (meta.info.get("splits") or {}).items():
        target = "validation" if name in VALIDATION_SPLIT_NAMES else "train"
        if target == "train" and keep_train_open:
            continue
        start, end = (int(x) for x in str(span).split(":"))
        for index in range(start, min(end, len(meta.episodes))):
            splits[episode_id(meta, index)] = target
    return splits


def episode_id(meta: LeRobotMeta, index: int) -> str:
    row = meta.episodes[index]
    stored = row.get(lerobot_mapping.METADATA_PREFIX + "episode_id")
    return stored if stored else f"{default_name(meta.root)}_{index:06d}"


def default_name(root: str) -> str:
    name = re.sub(r"[^a-z0-9_]", "_", Path(root).name.lower()).strip("_") or "lerobot"
    return name if name[0].isalpha() else f"lerobot_{name}"


def import_lerobot(source: str, output_dir: str, dataset: str = "", *, version: str = "1.0.0",
                   validation_fraction: float = 0.0, overwrite: bool = False, pipeline_args: Sequence[str] = (),
                   log=print) -> JobResult:
    """Converts the LeRobot dataset at `source` into `output_dir/<dataset>/<version>`."""
    try:
        meta = lerobot_format.read_meta(source)
        layout = lerobot_mapping.import_layout(meta)
    except LeRobotFormatError as e:
        raise ConversionError(str(e)) from None
    name = dataset or default_name(meta.root)
    items = [f"{meta.root}#{i}" for i in range(len(meta.episodes))]
    if not items:
        raise ConversionError(f"LeRobot dataset {meta.root!r} has no episodes")
    if layout.dropped:
        log(f"LeRobot features with no RLDS counterpart, not converted: {', '.join(layout.dropped)}")
    return run_rlds_job(
        items, LeRobotEpisodeReader(meta, layout, default_name(meta.root)), layout.spec, output_dir, name,
        version=version, validation_fraction=validation_fraction,
        fixed_splits=split_of_episodes(meta, keep_train_open=validation_fraction > 0),
        num_buckets=max(1, math.ceil(len(items) / EPISODES_PER_SHARD)), pipeline_args=pipeline_args, log=log,
        verb="Importing", overwrite=overwrite,
        report={"lerobot_source": meta.root, "lerobot": {
            "codebase_version": meta.info["codebase_version"], "fps": meta.fps, "robot_type": meta.info.get("robot_type"),
            "cameras": layout.cameras, "dropped_features": list(layout.dropped),
            "state_names": meta.features[lerobot_mapping.STATE].get("names"),
            "action_names": meta.features[lerobot_mapping.ACTION].get("names")}})


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = source_out_parser(__doc__, "the LeRobotDataset v3.0 directory (meta/info.json inside); only read",
                               "TFDS data directory the dataset goes into (OUT/DATASET/VERSION)")
    parser.add_argument("--dataset", default="", help="dataset name (snake_case); default: the source folder's name")
    parser.add_argument("--version", default="1.0.0", help="dataset version (default 1.0.0)")
    parser.add_argument("--validation_fraction", type=float, default=0.0,
                        help="share of the source's train episodes held out as validation (default 0: "
                             "the source's own splits)")
    return parser.parse_known_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args, beam_args = parse_args(sys.argv[1:] if argv is None else argv)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # stdout's last line is the result
    try:
        result = import_lerobot(args.source, args.out, args.dataset, version=args.version,
                                validation_fraction=args.validation_fraction, overwrite=args.overwrite,
                                pipeline_args=beam_args, log=log)
    except (ConversionError, OSError, ValueError) as e:
        log(f"error: {e}")
        return 1
    report(result, "Imported", log)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Beam job: any TFDS/RLDS dataset (e.g. Open X-Embodiment) -> a dataset in our schema, through a mapping.

    python pipelines/map_rlds.py --source=/data/bridge/0.1.0 --mapping=bridge --output_dir=DATA \\
        [--dataset=bridge_mapped] [--episodes_per_item=20] [--overwrite] [Beam options]

`--mapping` is a bundled mapping name (datasets/mappings/*.toml) or a TOML file (format:
datasets/rlds_mapping.py). The source is opened with `tfds.builder_from_directory` and never
modified; the mapping is checked against its features before anything runs (a key it lacks or a
shape that does not fit is one error naming the dataset and the field). Work items are slices of
`--episodes_per_item` episodes; each episode goes through `mapped_episodes.map_episode`, and one
that does not fit (empty instruction, non-finite value, action outside [-1, 1] without `clip`...)
becomes a dead letter naming the dataset, episode and field while the rest converts. Splits: the
source's `train` stays `train`, every other split becomes `validation`.

Runs on Beam's DirectRunner by default; any runner with standard pipeline options (as
pipelines/convert_demos.py). Writes DATA/NAME/<version>/ like the demo conversion (TFRecord shards,
statistics, dead letters, plan, conversion.json) plus `mapping.json` (the mapping's TOML text and
the state/action dimension names). The last line of standard output is the dataset directory.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import sys
from typing import Iterator, Sequence

from vlarft.datasets.mapped_episodes import ResolvedMapping, map_episode, resolve
from vlarft.datasets.rlds_source import (MappingError, SourceDataset, open_source, our_split, parse_slice,
                                         read_source_episodes)
from vlarft.datasets.rlds_mapping import MappingConfigError, load_mapping
from vlarft.datasets.schema import Episode
from vlarft.pipelines.rlds_job import ConversionError, JobResult, run_and_report, run_rlds_job
from vlarft.pipelines.sources import DeadLetter

MAPPING_INFO = "mapping.json"


@dataclasses.dataclass(frozen=True)
class MapRldsConfig:
    """One run of the mapping job.

    Attributes:
      source: the source TFDS dataset directory (holding dataset_info.json).
      mapping: a bundled mapping name or a TOML file path.
      output_dir: the TFDS data directory the new dataset goes into.
      dataset: the new dataset's name (snake_case); default "<source name>_mapped".
      version: the new dataset's version.
      episodes_per_item: source episodes per Beam work item.
      episodes_per_shard: episodes per output shard bucket (sets the number of buckets).
      overwrite: replace an existing OUTPUT_DIR/DATASET/VERSION (kept until the new one is complete).
    """

    source: str
    mapping: str
    output_dir: str
    dataset: str = ""
    version: str = "1.0.0"
    episodes_per_item: int = 20
    episodes_per_shard: int = 100
    overwrite: bool = False


class MappedEpisodeReader:
    """`"<split>[<start>:<stop>]"` -> those source episodes in our schema, or dead letters."""

    def __init__(self, source: SourceDataset, resolved: ResolvedMapping):
        self.source, self.resolved = source, resolved

    def __call__(self, item: str) -> Iterator[Episode | DeadLetter]:
        import tensorflow as tf

        split, start, stop = parse_slice(item)
        episodes = read_source_episodes(self.source, split, start, stop, self.resolved.image_fields)
        index = start
        while True:
            try:
                episode = next(episodes)
            except StopIteration:
                return
            except tf.errors.OpError as e:  # unreadable records: the rest of this slice is lost, others convert
                yield DeadLetter(file=f"{self.source.path}:{split}[{index}:{stop}]",
                                 reason=f"dataset {self.source.path!r}: cannot read episodes {index}..{stop - 1} "
                                        f"of split {split!r}: {type(e).__name__}: {e.message}")
                return
            index = episode.index + 1
            try:
                yield map_episode(episode, self.resolved)
            except MappingError as e:
                yield DeadLetter(file=f"{self.source.path}:{episode.where}", reason=str(e), episode_id=e.episode_id)


def map_rlds(config: MapRldsConfig, *, pipeline_args: Sequence[str] = (), log=print) -> JobResult:
    """Runs the job (module docstring); raises ConversionError when nothing can be converted."""
    if config.episodes_per_item < 1 or config.episodes_per_shard < 1:
        raise ConversionError("episodes_per_item and episodes_per_shard must be at least 1")
    try:
        source = open_source(config.source)
        resolved = resolve(load_mapping(config.mapping), source)
    except (MappingError, MappingConfigError) as e:
        raise ConversionError(str(e)) from None
    items, splits, total = [], {}, 0
    for split, count in source.splits.items():
        for start in range(0, count, config.episodes_per_item):
            items.append(f"{split}[{start}:{min(count, start + config.episodes_per_item)}]")
        total += count
    if not items:
        raise ConversionError(f"dataset {source.path!r} has no episodes")
    fixed = None
    if any(our_split(s) != "train" for s in source.splits):  # keep the source's held-out split
        fixed = {f"{split}-{i:06d}": our_split(split) for split, count in source.splits.items() for i in range(count)}
    dataset = config.dataset or re.sub(r"[^a-z0-9_]", "_", f"{source.name}_mapped".lower())
    return run_rlds_job(
        items, MappedEpisodeReader(source, resolved), resolved.spec, config.output_dir, dataset,
        version=config.version, num_buckets=max(1, math.ceil(total / config.episodes_per_shard)),
        fixed_splits=fixed if resolved.mapping.episode.id == "index" else None,
        pipeline_args=pipeline_args, log=log, verb="Mapping", overwrite=config.overwrite,
        report={"source_dataset": source.path, "mapping": resolved.mapping.name},
        extra_files={MAPPING_INFO: {"source_dataset": source.path, **resolved.names_json()}})


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="source TFDS/RLDS dataset directory")
    parser.add_argument("--mapping", required=True, help="bundled mapping name or mapping TOML file")
    parser.add_argument("--output_dir", required=True, help="TFDS data directory for the new dataset")
    parser.add_argument("--dataset", default="", help="new dataset name (default <source>_mapped)")
    parser.add_argument("--version", default="1.0.0", help="new dataset version (default 1.0.0)")
    parser.add_argument("--episodes_per_item", type=int, default=20, help="source episodes per work item")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing dataset (kept until the new one is complete)")
    args, beam_args = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # stdout's last line is the result
    config = MapRldsConfig(source=args.source, mapping=args.mapping, output_dir=args.output_dir,
                           dataset=args.dataset, version=args.version, episodes_per_item=args.episodes_per_item,
                           overwrite=args.overwrite)
    return run_and_report(lambda: map_rlds(config, pipeline_args=beam_args, log=log), "Mapped", log)


if __name__ == "__main__":
    sys.exit(main())

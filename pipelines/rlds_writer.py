"""A runner-agnostic Beam pipeline that writes validated episodes as a TFDS/RLDS dataset.

Why not TFDS's own Beam writer: it assigns shards through side inputs, which Beam's Dask runner
does not serve (IndexError in `_assign_shard`). This pipeline uses only Create, ParDo, Flatten and
GroupByKey, which every runner has:

  files --read+validate+serialize--> episodes --(bucket = hash(id) % S)--------------------.
                               \\--> summaries + dead letters --GroupByKey(one key)--> plan --+
                                                                                           |
           shard files <--write one TFRecord per (split, bucket)-- GroupByKey(bucket) <-----'

The plan step (tiny data: ids, action/state arrays) picks the validation episodes, writes the
statistics and dead letters, and tells every bucket which of its episodes go to which split.
Each episode's serialized bytes are spilled to a file under the work directory (`SPILL_DIR`) by
the worker that read it, and only its name crosses the shuffle: a bucket's writer holds one
episode at a time, so a worker's memory does not grow with the dataset (a cluster's workers share
the output file system anyway). Everything is ordered by episode id,
so the same inputs give byte-identical files on any runner. The driver then numbers the shards
contiguously and writes TFDS metadata with `tfds.folder_dataset.write_metadata`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Callable, Iterator

import apache_beam as beam

from vlarft.datasets import statistics
from vlarft.datasets.episode_serializer import EpisodeSerializer
from vlarft.datasets.schema import Episode, EpisodeSpec, num_steps
from vlarft.pipelines.sources import DeadLetter

# input path -> its validated episodes, or dead letters (must be picklable for distributed runners)
EpisodeReader = Callable[[str], Iterator["Episode | DeadLetter"]]

SPLITS = ("train", "validation")
PLAN_FILE = "plan.json"
SPILL_DIR = ".episodes"  # serialized episodes between the reading and the shard-writing workers
DEAD_LETTER_FILE = "dead_letters.jsonl"


@dataclasses.dataclass(frozen=True)
class WriteConfig:
    """What the conversion pipeline writes.

    Attributes:
      dataset: dataset name (snake_case), the prefix of every shard file.
      work_dir: directory the shards, plan, statistics and dead letters are written to.
      spec: the episode spec every episode must match.
      num_buckets: shard buckets per split (empty ones are dropped at finalisation).
      validation_fraction: share of episodes held out as the `validation` split (at least one
        when there are two or more episodes and the fraction is > 0).
      fixed_splits: episode id -> split, taking precedence over the validation choice (used to
        keep a derived dataset's splits identical to its source's).
      input_dead_letters: inputs refused before the pipeline (e.g. a file name that is not
        UTF-8), listed with the pipeline's own dead letters.
    """

    dataset: str
    work_dir: str
    spec: EpisodeSpec
    num_buckets: int = 1
    validation_fraction: float = 0.1
    fixed_splits: dict | None = None
    input_dead_letters: tuple[DeadLetter, ...] = ()


def stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def shard_name(dataset: str, split: str, index: int, total: int) -> str:
    """TFDS's default file name template `{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}`."""
    return f"{dataset}-{split}.tfrecord-{index:05d}-of-{total:05d}"


# Called once per episode read, when the runner runs the DoFns in the driver's process (the
# DirectRunner): `rlds_job.run_rlds_job` points it at its progress bar. Workers of other runners
# (Dask) run a fresh import of this module, where it stays None.
episode_read_hook: Callable[[], None] | None = None


class ReadAndSerialize(beam.DoFn):
    """file -> (PLAN, (None, ("summary", summary) | ("dead", DeadLetter))) for the planner and
    (DATA, (bucket, ("episode", (id, file, spill file)))) for the episode's bucket. (Routed by a tag in
    the element, not Beam's tagged outputs, which the Dask runner does not keep apart.)"""

    PLAN, DATA = "plan", "data"

    def __init__(self, config: WriteConfig, reader: EpisodeReader):
        self.config = config
        self.reader = reader
        self.serializer = None

    def setup(self):
        import tensorflow as tf

        self.serializer = EpisodeSerializer(self.config.spec)
        tf.io.gfile.makedirs(os.path.join(self.config.work_dir, SPILL_DIR))  # once per worker, not per episode

    def process(self, path: str) -> Iterator:
        for item in self.reader(path):
            if isinstance(item, DeadLetter):
                yield self.PLAN, (None, ("dead", item))
                continue
            eid = item["episode_metadata"]["episode_id"]
            try:
                data = self.serializer.serialize(item)
            except Exception as e:  # an encoder failure is a property of this episode's data
                yield self.PLAN, (None, ("dead", DeadLetter(file=path, episode_id=eid, reason=f"cannot encode: {e}")))
                continue
            summary = {"episode_id": eid, "file": path, "num_steps": num_steps(item),
                       "success": item["episode_metadata"]["success"],
                       "action": item["steps"]["action"], "state": item["steps"]["observation"]["state"]}
            if episode_read_hook is not None:
                episode_read_hook()
            yield self.PLAN, (None, ("summary", summary))
            spilled = spill(self.config.work_dir, eid, path, data)
            yield self.DATA, (stable_hash(eid) % self.config.num_buckets, ("episode", (eid, path, spilled)))


def spill(work_dir: str, eid: str, path: str, data: bytes) -> str:
    """Writes one serialized episode to its spill file in `work_dir/SPILL_DIR` (atomically: a
    retried bundle rewrites the same bytes under the same name) and returns the file's name."""
    import tensorflow as tf

    folder = os.path.join(work_dir, SPILL_DIR)  # made by ReadAndSerialize.setup
    name = hashlib.sha256("\0".join((eid, path)).encode()).hexdigest()
    final = os.path.join(folder, f"{name}.record")
    tmp = f"{final}.tmp-{os.getpid()}"
    with tf.io.gfile.GFile(tmp, "wb") as f:
        f.write(data)
    tf.io.gfile.rename(tmp, final, overwrite=True)
    return final


def choose_validation(episode_ids: list[str], fraction: float) -> set[str]:
    """A deterministic, input-order-free choice of round(fraction * n) ids (>= 1 if n >= 2)."""
    n = len(episode_ids)
    if fraction <= 0 or n < 2:
        return set()
    count = min(n - 1, max(1, round(fraction * n)))
    return set(sorted(episode_ids, key=lambda e: (stable_hash(e), e))[:count])


class Plan(beam.DoFn):
    """All summaries and dead letters -> split assignment per bucket; writes the side files."""

    def __init__(self, config: WriteConfig):
        self.config = config

    def process(self, keyed: tuple) -> Iterator[tuple[int, tuple]]:
        _, records = keyed
        summaries = sorted((r for kind, r in records if kind == "summary"),
                           key=lambda s: (s["episode_id"], s["file"]))
        dead = [r for kind, r in records if kind == "dead"] + list(self.config.input_dead_letters)
        accepted: dict[str, dict] = {}
        for s in summaries:
            first = accepted.setdefault(s["episode_id"], s)
            if first is not s:
                dead.append(DeadLetter(file=s["file"], episode_id=s["episode_id"],
                                       reason=f"duplicate episode_id, already taken from {first['file']}"))
        fixed = self.config.fixed_splits or {}
        validation = choose_validation([e for e in accepted if e not in fixed], self.config.validation_fraction)
        split_of = {eid: fixed.get(eid, "validation" if eid in validation else "train") for eid in accepted}
        self._write_side_files(accepted, split_of, dead)
        for bucket in range(self.config.num_buckets):
            yield bucket, ("plan", {(eid, s["file"]): split_of[eid] for eid, s in accepted.items()
                                    if stable_hash(eid) % self.config.num_buckets == bucket})

    def _write_side_files(self, accepted: dict, split_of: dict, dead: list[DeadLetter]) -> None:
        work = self.config.work_dir
        train = [(s["action"], s["state"]) for eid, s in sorted(accepted.items()) if split_of[eid] == "train"]
        stats = statistics.compute_statistics(train)
        stats["split"] = "train"
        stats["episodes_per_split"] = {split: sum(v == split for v in split_of.values()) for split in SPLITS}
        stats["successes"] = sum(bool(s["success"]) for s in accepted.values())
        statistics.write_json_atomic(os.path.join(work, statistics.FILENAME), stats)
        shard_lengths = {split: [0] * self.config.num_buckets for split in SPLITS}
        for eid, split in split_of.items():
            shard_lengths[split][stable_hash(eid) % self.config.num_buckets] += 1
        statistics.write_json_atomic(os.path.join(work, PLAN_FILE), {
            "splits": dict(sorted(split_of.items())),
            "bucket_lengths": shard_lengths,
            "num_steps": {eid: s["num_steps"] for eid, s in sorted(accepted.items())},
        })
        lines = [json.dumps(d.to_json(), sort_keys=True) for d in
                 sorted(dead, key=lambda d: (d.file, d.episode_id, d.reason))]
        tmp = os.path.join(work, f".{DEAD_LETTER_FILE}.tmp")
        with open(tmp, "w") as f:
            f.write("".join(line + "\n" for line in lines))
        os.replace(tmp, os.path.join(work, DEAD_LETTER_FILE))


class WriteBucket(beam.DoFn):
    """(bucket, [plan, episodes...]) -> one TFRecord file per split, episodes sorted by id."""

    def __init__(self, config: WriteConfig):
        self.config = config

    def process(self, keyed: tuple) -> Iterator[tuple[str, int, int]]:
        import tensorflow as tf

        bucket, items = keyed
        plans = [payload for kind, payload in items if kind == "plan"]
        if len(plans) != 1:
            raise RuntimeError(f"bucket {bucket}: expected one plan, got {len(plans)}")
        plan = plans[0]
        episodes = sorted((eid, path, spilled) for kind, (eid, path, spilled) in
                          ((k, p) for k, p in items if k == "episode"))
        for split in SPLITS:
            records = [spilled for eid, path, spilled in episodes if plan.get((eid, path)) == split]
            if not records:
                continue
            final = os.path.join(self.config.work_dir, shard_name(
                self.config.dataset, split, bucket, self.config.num_buckets))
            tmp = final + ".tmp"
            with tf.io.TFRecordWriter(tmp) as writer:
                for spilled in records:  # one episode in memory at a time
                    with tf.io.gfile.GFile(spilled, "rb") as f:
                        writer.write(f.read())
            tf.io.gfile.rename(tmp, final, overwrite=True)
            yield split, bucket, len(records)


def _select(element: tuple, tag: str) -> Iterator:
    if element[0] == tag:
        yield element[1]


class ConvertToRlds(beam.PTransform):
    """PCollection of input file paths -> shard files, plan, statistics, dead letters."""

    def __init__(self, config: WriteConfig, reader: EpisodeReader):
        super().__init__()
        self.config = config
        self.reader = reader

    def expand(self, files):
        read = ReadAndSerialize(self.config, self.reader)
        parsed = files | "ReadValidateSerialize" >> beam.ParDo(read)
        to_plan = parsed | "ToPlan" >> beam.FlatMap(_select, read.PLAN)
        data = parsed | "ToData" >> beam.FlatMap(_select, read.DATA)
        plans = (to_plan | "GatherSummaries" >> beam.GroupByKey()
                 | "Plan" >> beam.ParDo(Plan(self.config)))
        return ((plans, data) | "Join" >> beam.Flatten()
                | "GroupByBucket" >> beam.GroupByKey()
                | "WriteShards" >> beam.ParDo(WriteBucket(self.config)))

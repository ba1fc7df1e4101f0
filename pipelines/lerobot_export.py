"""Beam job: one of our RLDS datasets -> a LeRobotDataset v3.0 directory (lerobot 0.6.1's format).

    python -m vlarft.pipelines.lerobot_export RLDS_DATASET_DIR --out=LEROBOT_DIR [--fps=10] \\
        [--robot_type=NAME] [--overwrite] [Beam options]

Runs on Beam's DirectRunner by default; any runner with standard pipeline options (the workers
write into the output's folder, so they need the same filesystem, as for the demo conversion).

  shards --decode, encode each camera (AV1), per-episode stats, stage--> summaries + dead letters
         --GroupByKey(one key)--> plan: episode order (train, then validation; by episode id),
           global indices, tasks, which data/video file each episode goes to; writes
           meta/episodes, meta/tasks.parquet, meta/stats.json
         --one item per output file--> data/chunk-*/file-*.parquet, videos/<key>/chunk-*/file-*.mp4

The driver then writes meta/info.json (last: it marks the directory complete) and swaps the
directory into place (`datasets/directory_swap.py`): an existing LEROBOT_DIR is refused unless
`--overwrite`, and is then kept until the new one is complete. The source is only read; an
episode that cannot be exported is listed in `meta/vlarft_export.json` (dead letters) and the
others are written. Fields without a LeRobot meaning become extra features and meta/episodes
columns (`datasets/lerobot_mapping.py`), so importing the result gives our dataset back. The last
line of standard output is LEROBOT_DIR.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Iterator, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vlarft.datasets import lerobot_format as fmt
from vlarft.datasets import lerobot_mapping as mapping
from vlarft.datasets import lerobot_video
from vlarft.datasets.directory_swap import swap_into_place
from vlarft.datasets.reader import dataset_spec, iterate_episodes, open_dataset
from vlarft.datasets.schema import EpisodeSpec
from vlarft.datasets.statistics import write_json_atomic
from vlarft.pipelines.rlds_job import ConversionError, prepare_work_dir, run_to_completion, source_out_parser
from vlarft.pipelines.sources import DeadLetter
from vlarft.robot_io.contract import ACTION_NAMES, STATE_DIM, STATE_LAYOUT

COMPLETE_MARKER = fmt.INFO_PATH  # written last
EXPORT_REPORT = "meta/vlarft_export.json"
STAGING = ".staging"
SPLIT_ORDER = ("train", "validation")


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """What the export writes.

    Attributes:
      source_dir: the RLDS dataset directory (read only).
      work_dir: where the LeRobot directory is assembled (`.incomplete-<name>` beside the output).
      spec: the source's EpisodeSpec.
      fps: frames per second recorded in info.json and the videos (our sim runs at 10 Hz).
      state_names, action_names: per-dimension names of `observation.state` and `action`.
      encoder: the video encoder settings (lerobot 0.6.1's defaults).
      data_files_size_in_mb, video_files_size_in_mb, chunks_size: lerobot's file budgets.
    """

    source_dir: str
    work_dir: str
    spec: EpisodeSpec
    fps: int = 10
    state_names: tuple[str, ...] = ()
    action_names: tuple[str, ...] = ()
    encoder: lerobot_video.VideoEncoderSettings = lerobot_video.VideoEncoderSettings()
    data_files_size_in_mb: int = fmt.DATA_FILES_SIZE_IN_MB
    video_files_size_in_mb: int = fmt.VIDEO_FILES_SIZE_IN_MB
    chunks_size: int = fmt.CHUNKS_SIZE

    def features(self, codec: str = "av1") -> dict:
        info = {cam: self.encoder.info(h, w, self.fps, codec) for cam, (h, w) in self.spec.cameras.items()}
        return mapping.lerobot_features(self.spec, state_names=self.state_names, action_names=self.action_names,
                                        video_info=info)


def default_state_names(state_dim: int) -> list[str]:
    """Our robots' proprio layout (robot_io.contract.STATE_LAYOUT) when the size matches."""
    if state_dim != STATE_DIM:
        return mapping.names_or_default(None, state_dim, "state")
    return [f"{part}_{i}" if size > 1 else part for part, size in STATE_LAYOUT for i in range(size)]


def staged(work_dir: str, shard: str, position: int) -> str:
    """Where the episode at `position` of `shard` is staged (unique even for duplicate ids)."""
    return os.path.join(work_dir, STAGING, hashlib.sha256(f"{shard}#{position}".encode()).hexdigest()[:24])


class StageEpisodes(beam.DoFn):
    """`"<split>[<i>shard]"` -> per episode: columns and camera MP4s staged on disk, and a summary
    (or a dead letter)."""

    def __init__(self, config: ExportConfig):
        self.config = config

    def process(self, shard: str) -> Iterator[tuple]:
        cfg = self.config
        for position, episode in enumerate(iterate_episodes(cfg.source_dir, shard)):
            eid = episode["episode_metadata"]["episode_id"]
            try:
                yield "summary", self._stage(episode, shard.split("[", 1)[0], staged(cfg.work_dir, shard, position))
            except (ValueError, OSError) as e:
                yield "dead", DeadLetter(file=f"{cfg.source_dir}:{shard}", episode_id=eid, reason=str(e))

    def _stage(self, episode, split: str, base: str) -> dict:
        cfg = self.config
        eid = episode["episode_metadata"]["episode_id"]
        os.makedirs(os.path.dirname(base), exist_ok=True)
        columns = mapping.episode_columns(episode, cfg.fps)
        stats, video_bytes = {}, {}
        for cam in cfg.spec.cameras:
            frames = episode["steps"]["observation"][f"image_{cam}"]
            try:
                data = lerobot_video.encode_episode(frames, cfg.fps, cfg.encoder)
            except ValueError as e:
                raise ValueError(f"episode {eid!r}, field 'observation/image_{cam}': {e}") from None
            with open(f"{base}.{cam}.mp4", "wb") as f:
                f.write(data)
            video_bytes[cam] = len(data)
            stats[f"{mapping.CAMERA_PREFIX}{cam}"] = fmt.feature_stats(frames, visual=True)
        instructions = [str(s) for s in episode["steps"]["language_instruction"]]
        np.savez(f"{base}.npz", **columns)
        stats.update({key: fmt.feature_stats(values) for key, values in columns.items()})
        return {"episode_id": eid, "split": split, "staged": base, "length": len(instructions),
                "instructions": instructions, "metadata": episode["episode_metadata"], "stats": stats,
                "video_bytes": video_bytes, "data_bytes": sum(np.asarray(v).nbytes for v in columns.values())}


class PlanExport(beam.DoFn):
    """All summaries -> episode order, indices, tasks and file assignment; writes meta/episodes,
    meta/tasks.parquet, meta/stats.json and the plan the driver reads; yields one job per output file."""

    def __init__(self, config: ExportConfig):
        self.config = config

    def process(self, keyed: tuple) -> Iterator[tuple]:
        _, records = keyed
        cfg = self.config
        episodes, dead = _ordered_unique([r for kind, r in records if kind == "summary"], cfg.source_dir)
        dead += [r for kind, r in records if kind == "dead"]
        features = cfg.features()
        tasks: dict[str, int] = {}
        rows, data_jobs, video_jobs = [], {}, {}
        data_file = _FileRoller(cfg.data_files_size_in_mb, cfg.chunks_size)
        video_files = {cam: _FileRoller(cfg.video_files_size_in_mb, cfg.chunks_size) for cam in cfg.spec.cameras}
        frames_before = 0
        for index, s in enumerate(episodes):
            task_indices = [tasks.setdefault(t, len(tasks)) for t in s["instructions"]]
            chunk, file = data_file.place(s["data_bytes"], s["length"])
            data_jobs.setdefault((chunk, file), []).append((s["staged"], index, frames_before, task_indices))
            row = {"episode_index": index, "tasks": list(dict.fromkeys(s["instructions"])), "length": s["length"],
                   "data/chunk_index": chunk, "data/file_index": file,
                   "dataset_from_index": frames_before, "dataset_to_index": frames_before + s["length"]}
            for cam, roller in video_files.items():
                v_chunk, v_file = roller.place(s["video_bytes"][cam], s["length"])
                video_jobs.setdefault((cam, v_chunk, v_file), []).append((s["staged"], s["length"]))
                row.update(_video_columns(f"{mapping.CAMERA_PREFIX}{cam}", v_chunk, v_file,
                                          roller.frames_before_last, s["length"], cfg.fps))
            s["stats"].update({"episode_index": fmt.feature_stats(np.full(s["length"], index)),
                               "index": fmt.feature_stats(np.arange(frames_before, frames_before + s["length"])),
                               "task_index": fmt.feature_stats(np.asarray(task_indices))})
            row.update({f"stats/{feature}/{name}": np.asarray(s["stats"][feature][name]).tolist()
                        for feature in features if feature in s["stats"] for name in fmt.STAT_NAMES})
            row.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
            row.update(mapping.metadata_columns(s["metadata"], s["split"]))
            rows.append(row)
            frames_before += s["length"]
        root = Path(cfg.work_dir)
        if episodes:
            fmt.write_episodes(root, rows)
            fmt.write_tasks(root, list(tasks))
            fmt.write_stats(root, fmt.stats_to_json({f: fmt.aggregate_stats([s["stats"][f] for s in episodes])
                                                     for f in features if f in episodes[0]["stats"]}))
        robots = sorted({s["metadata"]["robot"] for s in episodes})
        write_json_atomic(root / ".plan.json", {
            "total_episodes": len(episodes), "total_frames": frames_before, "total_tasks": len(tasks),
            "splits": _split_ranges([s["split"] for s in episodes]), "robot_type": robots[0] if len(robots) == 1 else None,
            "dead_letters": [d.to_json() for d in sorted(dead, key=lambda d: (d.episode_id, d.reason))],
            "episode_ids": [s["episode_id"] for s in episodes]})
        for (chunk, file), items in data_jobs.items():
            yield "data", (chunk, file), items
        for (cam, chunk, file), items in video_jobs.items():
            yield "video", (cam, chunk, file), items


def _ordered_unique(summaries: list[dict], source: str) -> tuple[list[dict], list[DeadLetter]]:
    """Episodes in export order (train, validation, other splits; by id), duplicates dead-lettered."""
    rank = lambda s: (SPLIT_ORDER.index(s["split"]) if s["split"] in SPLIT_ORDER else len(SPLIT_ORDER),
                      s["split"], s["episode_id"], s["staged"])
    episodes, dead, seen = [], [], set()
    for s in sorted(summaries, key=rank):
        if s["episode_id"] in seen:
            dead.append(DeadLetter(file=source, episode_id=s["episode_id"], reason="duplicate episode_id"))
        else:
            seen.add(s["episode_id"])
            episodes.append(s)
    return episodes, dead


def _video_columns(key: str, chunk: int, file: int, frames_before: int, length: int, fps: int) -> dict:
    """An episode's meta/episodes columns for one camera: its file and its span inside it."""
    start = frames_before / fps
    return {f"videos/{key}/chunk_index": chunk, f"videos/{key}/file_index": file,
            f"videos/{key}/from_timestamp": start, f"videos/{key}/to_timestamp": start + length / fps}


def _split_ranges(splits_in_order: list[str]) -> dict[str, str]:
    """info.json `splits`: split -> "start:end" over the episode indices (episodes grouped by split)."""
    ranges, start = {}, 0
    for split in dict.fromkeys(splits_in_order):
        count = splits_in_order.count(split)
        ranges[split] = f"{start}:{start + count}"
        start += count
    return ranges


class _FileRoller:
    """lerobot's file rolling: the next episode starts a new file when the current one would reach
    its size budget; `file_index` runs to `chunks_size - 1`, then the chunk advances."""

    def __init__(self, budget_mb: float, chunks_size: int):
        self.budget, self.chunks_size = budget_mb * 1024 * 1024, chunks_size
        self.chunk = self.file = 0
        self.size = 0
        self.frames = 0
        self.frames_before_last = 0

    def place(self, nbytes: int, frames: int) -> tuple[int, int]:
        if self.size and self.size + nbytes >= self.budget:
            self.file += 1
            if self.file >= self.chunks_size:
                self.chunk, self.file = self.chunk + 1, 0
            self.size = self.frames = 0
        self.frames_before_last = self.frames
        self.size += nbytes
        self.frames += frames
        return self.chunk, self.file


class WriteFile(beam.DoFn):
    """One data parquet (one row group per episode) or one camera's MP4, from the staged episodes."""

    def __init__(self, config: ExportConfig):
        self.config = config

    def process(self, job: tuple) -> Iterator[str]:
        kind, key, items = job
        cfg = self.config
        root = Path(cfg.work_dir)
        if kind == "video":
            cam, chunk, file = key
            path = root / fmt.VIDEO_PATH.format(video_key=f"{mapping.CAMERA_PREFIX}{cam}", chunk_index=chunk,
                                                file_index=file)
            videos = [Path(f"{base}.{cam}.mp4").read_bytes() for base, _ in items]
            lerobot_video.concatenate_episodes(videos, [n for _, n in items], cfg.fps, path)
            yield str(path)
            return
        chunk, file = key
        path = root / fmt.DATA_PATH.format(chunk_index=chunk, file_index=file)
        path.parent.mkdir(parents=True, exist_ok=True)
        schema = fmt.data_schema(cfg.features())
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        with pq.ParquetWriter(tmp, schema=schema, compression="snappy", use_dictionary=True) as writer:
            for base, episode_index, first_index, task_indices in items:
                with np.load(f"{base}.npz") as staged_columns:
                    columns = {k: staged_columns[k] for k in staged_columns.files}
                length = len(task_indices)
                columns.update({"episode_index": np.full(length, episode_index, np.int64),
                                "index": np.arange(first_index, first_index + length, dtype=np.int64),
                                "task_index": np.asarray(task_indices, np.int64)})
                writer.write_table(pa.table({f.name: _arrow_column(columns[f.name], f.type) for f in schema},
                                            schema=schema))
        os.replace(tmp, path)
        yield str(path)


def _arrow_column(values: np.ndarray, arrow_type: pa.DataType) -> pa.Array:
    if pa.types.is_fixed_size_list(arrow_type):
        flat = pa.array(np.ascontiguousarray(values).reshape(-1), type=arrow_type.value_type)
        return pa.FixedSizeListArray.from_arrays(flat, type=arrow_type)
    return pa.array(values, type=arrow_type)


@dataclasses.dataclass
class ExportResult:
    lerobot_dir: str
    episodes: int
    frames: int
    dead_letters: list[dict]
    runner: str
    wall_s: float


def export_lerobot(source_dir: str, out: str, *, fps: int = 10, robot_type: str | None = None,
                   overwrite: bool = False, pipeline_args: Sequence[str] = (), log=print,
                   data_files_size_in_mb: float = fmt.DATA_FILES_SIZE_IN_MB,
                   video_files_size_in_mb: float = fmt.VIDEO_FILES_SIZE_IN_MB,
                   chunks_size: int = fmt.CHUNKS_SIZE) -> ExportResult:
    """Writes the RLDS dataset at `source_dir` as a LeRobotDataset v3.0 directory `out` (the file
    budgets are lerobot's defaults; a data file's size is estimated from the uncompressed columns)."""
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    start = time.time()
    source, final_dir = Path(source_dir).absolute(), Path(out).absolute()
    if final_dir == source or source in final_dir.parents or final_dir in source.parents:
        raise ConversionError(f"--out={final_dir} overlaps the source {source}; the source is never written")
    if fps <= 0:
        raise ValueError(f"--fps={fps}: must be a positive integer")
    try:
        info = open_dataset(source).info
        spec = dataset_spec(source)
    except (OSError, ValueError) as e:
        raise ConversionError(f"{source}: not a readable RLDS dataset: {e}") from None
    for cam, (h, w) in spec.cameras.items():
        if w < lerobot_video.MIN_WIDTH or h < lerobot_video.MIN_HEIGHT:
            raise ConversionError(f"{source}: camera {cam!r} is {h}x{w} px; {lerobot_video.VideoEncoderSettings.vcodec} "
                                  f"needs >= {lerobot_video.MIN_HEIGHT}x{lerobot_video.MIN_WIDTH}")
    work_dir = prepare_work_dir(final_dir, COMPLETE_MARKER, overwrite, log)
    (work_dir / "meta").mkdir()
    action_names = list(ACTION_NAMES) if spec.action_dim == len(ACTION_NAMES) else mapping.names_or_default(
        None, spec.action_dim, "action")
    config = ExportConfig(source_dir=str(source), work_dir=str(work_dir), spec=spec, fps=fps,
                          state_names=tuple(default_state_names(spec.state_dim)), action_names=tuple(action_names),
                          data_files_size_in_mb=data_files_size_in_mb, video_files_size_in_mb=video_files_size_in_mb,
                          chunks_size=chunks_size)
    shards = [f"{split}[{i}shard]" for split, split_info in info.splits.items() for i in range(split_info.num_shards)]
    options = PipelineOptions(list(pipeline_args))
    runner = options.view_as(StandardOptions).runner or "DirectRunner"
    log(f"Exporting {len(shards)} shard(s) of {source} into {final_dir} on {runner}...")
    pipeline = beam.Pipeline(options=options)
    _ = (pipeline | "Shards" >> beam.Create(shards)
         | "Stage" >> beam.ParDo(StageEpisodes(config))
         | "OneKey" >> beam.Map(lambda record: (None, record))
         | "Gather" >> beam.GroupByKey()
         | "Plan" >> beam.ParDo(PlanExport(config))
         | "Spread" >> beam.Reshuffle()
         | "WriteFiles" >> beam.ParDo(WriteFile(config)))
    run_to_completion(pipeline)
    plan = json.loads((work_dir / ".plan.json").read_text())
    if not plan["total_episodes"]:
        reasons = "\n  ".join(f"{d['episode_id']}: {d['reason']}" for d in plan["dead_letters"][:20])
        raise ConversionError(f"no episode could be exported; dead letters:\n  {reasons}")
    codec = lerobot_video.probe(next((work_dir / "videos").rglob("*.mp4")))["codec"]
    write_json_atomic(work_dir / EXPORT_REPORT, {
        "source_dataset": str(source), "runner": runner, "lerobot_format": fmt.MATCHED_LEROBOT,
        "episode_ids": plan["episode_ids"], "dead_letters": plan["dead_letters"]})
    shutil.rmtree(work_dir / STAGING, ignore_errors=True)
    (work_dir / ".plan.json").unlink()
    fmt.write_info(work_dir, {
        "codebase_version": fmt.CODEBASE_VERSION, "fps": fps, "features": config.features(codec),
        "total_episodes": plan["total_episodes"], "total_frames": plan["total_frames"],
        "total_tasks": plan["total_tasks"], "chunks_size": config.chunks_size,
        "data_files_size_in_mb": config.data_files_size_in_mb, "video_files_size_in_mb": config.video_files_size_in_mb,
        "data_path": fmt.DATA_PATH, "video_path": fmt.VIDEO_PATH,
        "robot_type": robot_type if robot_type is not None else plan["robot_type"], "splits": plan["splits"]})
    swap_into_place(work_dir, final_dir, COMPLETE_MARKER)
    return ExportResult(lerobot_dir=str(final_dir), episodes=plan["total_episodes"], frames=plan["total_frames"],
                        dead_letters=plan["dead_letters"], runner=runner, wall_s=time.time() - start)


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = source_out_parser(__doc__, "our RLDS dataset directory (DATA_DIR/NAME/VERSION); only read",
                               "the LeRobot dataset directory to write")
    parser.add_argument("--fps", type=int, default=10, help="frames per second of the recording (default 10, our sim)")
    parser.add_argument("--robot_type", default=None,
                        help="info.json robot_type (default: the episodes' robot when they all agree)")
    return parser.parse_known_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args, beam_args = parse_args(sys.argv[1:] if argv is None else argv)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # stdout's last line is the result
    try:
        result = export_lerobot(args.source, args.out, fps=args.fps, robot_type=args.robot_type,
                                overwrite=args.overwrite, pipeline_args=beam_args, log=log)
    except (ConversionError, OSError, ValueError) as e:
        log(f"error: {e}")
        return 1
    for d in result.dead_letters:
        log(f"dead letter: {d['file']} [{d['episode_id']}]: {d['reason']}")
    log(f"Exported {result.episodes} episode(s), {result.frames} frames; {len(result.dead_letters)} dead letter(s); "
        f"{result.wall_s:.1f} s on {result.runner}.")
    print(result.lerobot_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())

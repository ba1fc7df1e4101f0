"""Driver of an RLDS-writing Beam job: run the pipeline, number shards, write TFDS metadata, and
swap the finished dataset into place (used by the demo conversion and the embedding job).

The dataset is assembled in a hidden `<name>/.incomplete-<version>` folder and moved to
`<name>/<version>` only when complete, so a failed run never damages a good dataset; an existing
`<name>/<version>` is replaced only when the caller asks (`overwrite`), and a swap a crash
interrupted is finished or undone at the next start (`datasets/directory_swap.py`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

from vlarft.datasets import statistics
from vlarft.datasets.directory_swap import incomplete_dir, recover_interrupted_swap, swap_into_place
from vlarft.datasets.schema import EpisodeSpec, tfds_features
from vlarft.pipelines import rlds_writer


COMPLETE_MARKER = "conversion.json"  # written last: the dataset is complete


class ConversionError(RuntimeError):
    """The job produced no dataset (nothing readable, or the pipeline failed)."""


@dataclasses.dataclass
class JobResult:
    dataset_dir: str
    spec: EpisodeSpec
    episodes: dict[str, int]  # split -> episodes
    dead_letters: list[dict]
    runner: str
    wall_s: float


def run_rlds_job(inputs: Sequence[str], reader: rlds_writer.EpisodeReader, spec: EpisodeSpec,
                 output_dir: str, dataset: str, *, version: str = "1.0.0", validation_fraction: float = 0.1,
                 num_buckets: int = 1, fixed_splits: dict | None = None, pipeline_args: Sequence[str] = (),
                 log=print, verb: str = "Writing", report: dict | None = None, overwrite: bool = False,
                 extra_files: dict[str, dict] | None = None, dead_letters: Sequence = (), progress: bool = False,
                 expected_episodes: int | None = None) -> JobResult:
    """Runs `reader` over `inputs` on the Beam runner chosen by `pipeline_args` and writes the
    dataset `output_dir/dataset/version`; `report` entries are added to its conversion.json and
    `extra_files` (name -> JSON) are written beside it; `dead_letters` (inputs refused before the
    pipeline) are listed with the pipeline's own. An existing dataset there is refused
    (ConversionError) unless `overwrite`; it is then kept until the new one is complete.
    `progress` draws a bar of episodes read (of `expected_episodes` when known) on runners that
    run in this process (the DirectRunner)."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    start = time.time()
    if not re.fullmatch(r"[a-z][a-z0-9_]*", dataset):
        raise ValueError(f"--dataset={dataset!r}: use snake_case (lowercase letters, digits, _)")
    final_dir = Path(output_dir).absolute() / dataset / version
    work_dir = prepare_work_dir(final_dir, COMPLETE_MARKER, overwrite, log)
    config = rlds_writer.WriteConfig(dataset=dataset, work_dir=str(work_dir), spec=spec, num_buckets=num_buckets,
                                     validation_fraction=validation_fraction, fixed_splits=fixed_splits,
                                     input_dead_letters=tuple(dead_letters))
    options = PipelineOptions(list(pipeline_args))
    runner = options.view_as(StandardOptions).runner or "DirectRunner"
    log(f"{verb} {len(inputs)} input(s) into {final_dir} on {runner} ({num_buckets} shard bucket(s))...")
    pipeline = beam.Pipeline(options=options)
    _ = pipeline | "Inputs" >> beam.Create(list(inputs)) | "ToRlds" >> rlds_writer.ConvertToRlds(config, reader)
    with episode_bar(verb, expected_episodes, progress):
        run_to_completion(pipeline)
    dead = _read_dead_letters(work_dir)
    episodes = _finalize(work_dir, config, dead)
    for name, content in (extra_files or {}).items():
        statistics.write_json_atomic(work_dir / name, content)
    statistics.write_json_atomic(work_dir / COMPLETE_MARKER, {  # last: it marks the dataset complete
        "inputs": list(inputs), "runner": runner, "spec": json.loads(spec.to_json()), "episodes": episodes,
        "dead_letters": len(dead), "version": version, **(report or {})})
    swap_into_place(work_dir, final_dir, COMPLETE_MARKER)
    return JobResult(dataset_dir=str(final_dir), spec=spec, episodes=episodes, dead_letters=dead,
                     runner=runner, wall_s=time.time() - start)


@contextlib.contextmanager
def episode_bar(verb: str, total: int | None, show: bool) -> Iterator[None]:
    """A tqdm bar advanced by `rlds_writer.episode_read_hook` while the block runs."""
    from tqdm import tqdm

    bar = tqdm(total=total, desc=f"{verb.lower()} episodes", unit="ep", disable=not show, file=sys.stderr)
    rlds_writer.episode_read_hook = bar.update if show else None
    try:
        yield
    finally:
        rlds_writer.episode_read_hook = None
        bar.close()


def prepare_work_dir(final_dir: Path, marker: str, overwrite: bool, log) -> Path:
    """Repairs an interrupted swap at `final_dir`, refuses an existing one unless `overwrite`, and
    returns an empty `.incomplete-` folder beside it to assemble the new one in."""
    work_dir = incomplete_dir(final_dir)
    try:
        recovered = recover_interrupted_swap(final_dir, marker)
        if recovered:
            log(recovered)
        if final_dir.exists() and not overwrite:
            raise ConversionError(f"{final_dir} already exists; pass --overwrite to replace it (the old "
                                  f"dataset is kept until the new one is complete)")
        shutil.rmtree(work_dir, ignore_errors=True)
        work_dir.mkdir(parents=True)
    except OSError as e:
        raise ConversionError(f"cannot write the dataset {final_dir}: {e.strerror or e}") from None
    return work_dir


def source_out_parser(doc: str, source_help: str, out_help: str) -> argparse.ArgumentParser:
    """The command line of a job reading SOURCE into --out=DIR (Beam options pass through
    `parse_known_args`): the doc's first paragraph as description, SOURCE, --out, --overwrite."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help=source_help)
    parser.add_argument("--out", required=True, help=out_help)
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing output (kept until the new one is complete)")
    return parser


def run_to_completion(pipeline) -> None:
    """Runs a Beam pipeline and waits for it (closing the Dask runner's client afterwards)."""
    result = pipeline.run()
    try:
        result.wait_until_finish()
    finally:
        if getattr(result, "client", None) is not None:  # the Dask runner's client
            result.client.close()


def report(result: JobResult, verb: str, log) -> None:
    """Logs the dead letters and a summary, then prints the dataset directory as the last stdout line."""
    for d in result.dead_letters:
        log(f"dead letter: {d['file']}" + (f" [{d['episode_id']}]" if d["episode_id"] else "") + f": {d['reason']}")
    counts = ", ".join(f"{n} {split}" for split, n in result.episodes.items())
    log(f"{verb} {counts} episode(s); {len(result.dead_letters)} dead letter(s); {result.wall_s:.1f} s on {result.runner}.")
    print(result.dataset_dir)


def run_and_report(job: Callable[[], JobResult], verb: str, log) -> int:
    """The end of a job's CLI: runs it, then `report`s it (exit 0) or logs one `error: ...` line (exit 1)."""
    try:
        result = job()
    except (ConversionError, OSError, ValueError) as e:
        log(f"error: {e}")
        return 1
    report(result, verb, log)
    return 0


def _read_dead_letters(work_dir: Path) -> list[dict]:
    path = work_dir / rlds_writer.DEAD_LETTER_FILE
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _finalize(work_dir: Path, config: rlds_writer.WriteConfig, dead: list[dict]) -> dict[str, int]:
    """Numbers the written shards contiguously and writes the TFDS metadata."""
    import tensorflow_datasets as tfds

    shutil.rmtree(work_dir / rlds_writer.SPILL_DIR, ignore_errors=True)  # every shard is written
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

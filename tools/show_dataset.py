"""See a dataset before training on it: per-episode table, contact sheets / MP4s, statistics plots.

    python tools/show_dataset.py DATA/pick_cube/1.0.0                          # the table only
    python tools/show_dataset.py DATA/pick_cube/1.0.0 --episodes=0,3 --out=look/
    python tools/show_dataset.py /data/bridge/0.1.0 --mapping=bridge --episodes=train-000002 --out=look/

DATASET_DIR is one of our datasets (pipelines/convert_demos.py, map_rlds.py, embed_dataset.py) or,
with `--mapping` (a bundled mapping name or a TOML file, datasets/rlds_mapping.py), any TFDS/RLDS
dataset seen through that mapping, exactly as pipelines/map_rlds.py would convert it (episodes
that do not map are listed with the reason). Prints one row per episode (split, id, length,
success, interventions, source, instruction) with rich. With `--out`, writes for each chosen
episode (`--episodes`: row numbers or episode ids, or `all`; default the first)
`episode_<id>.png` (contact sheet: `--frames` frames of every camera beside the action, state and
reward curves) and `episode_<id>.mp4` (`--formats=png,mp4`), and `statistics_action.png` /
`statistics_state.png` (per-dimension mean +- std, p01..p99, min/max: the dataset's
dataset_statistics.json, or computed from the mapped episodes). Dimension names come from the
dataset's mapping.json or the mapping, else our robots' layouts.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Iterator, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from tqdm import tqdm

from vlarft.datasets import statistics
from vlarft.datasets.mapped_episodes import map_episode, resolve
from vlarft.datasets.rlds_source import MappingError, open_source, read_source_episodes
from vlarft.datasets.reader import iterate_episodes, open_dataset
from vlarft.datasets.rlds_mapping import MappingConfigError, load_mapping
from vlarft.datasets.schema import Episode
from vlarft.pipelines.map_rlds import MAPPING_INFO
from vlarft.tools.dataset_figures import contact_sheet, episode_video, statistics_plots

FORMATS = ("png", "mp4")


@dataclasses.dataclass
class EpisodeRow:
    """One table row: an episode, or a source episode that does not map (`problem`)."""

    number: int
    split: str
    episode_id: str
    length: int = 0
    success: bool = False
    interventions: int = 0
    source: str = ""
    instruction: str = ""
    problem: str = ""


@dataclasses.dataclass
class DatasetView:
    """What the tool shows: rows, the chosen episodes in full, statistics and dimension names."""

    title: str
    rows: list[EpisodeRow]
    chosen: dict[str, Episode]
    statistics: dict
    names: dict[str, list[str]]


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset_dir", help="one of our datasets, or any TFDS/RLDS dataset with --mapping")
    parser.add_argument("--mapping", default="", help="bundled mapping name or mapping TOML (source RLDS datasets)")
    parser.add_argument("--episodes", default="0", help="row numbers and/or episode ids, comma-separated, or 'all'")
    parser.add_argument("--out", default="", help="directory for the PNG/MP4 files (none without it)")
    parser.add_argument("--formats", default="png,mp4", help="episode pictures: png (contact sheet), mp4")
    parser.add_argument("--frames", type=int, default=8, help="frames per camera on a contact sheet")
    parser.add_argument("--fps", type=float, default=10.0, help="MP4 frame rate")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    formats = {f for f in args.formats.split(",") if f}
    if not formats <= set(FORMATS):
        parser.error(f"--formats: choose from {', '.join(FORMATS)}")
    if args.frames < 1 or args.fps <= 0:
        parser.error("--frames must be >= 1 and --fps > 0")
    return args


def wanted(selection: str):
    """The --episodes predicate over (row number, episode id)."""
    tokens = {t.strip() for t in selection.split(",") if t.strip()}
    return lambda number, episode_id: "all" in tokens or str(number) in tokens or episode_id in tokens


def _row(number: int, split: str, episode: Episode) -> EpisodeRow:
    meta, steps = episode["episode_metadata"], episode["steps"]
    return EpisodeRow(number=number, split=split, episode_id=meta["episode_id"], length=len(steps["is_first"]),
                      success=meta["success"], interventions=int(steps["intervention"][:-1].sum()),
                      source=meta["source"], instruction=meta["instruction"])


def _our_episodes(dataset_dir: str) -> Iterator[tuple[str, Episode | None, str, str]]:
    for split in open_dataset(dataset_dir).info.splits:
        for episode in iterate_episodes(dataset_dir, split):
            yield split, episode, episode["episode_metadata"]["episode_id"], ""


def load_view(dataset_dir: str, mapping: str, selection: str, progress: bool = True) -> DatasetView:
    """Reads every episode once (a progress bar on stderr), keeping only the chosen ones whole."""
    choose = wanted(selection)
    if mapping:
        source = open_source(dataset_dir)
        resolved = resolve(load_mapping(mapping), source)

        def episodes():
            for split in source.splits:
                for raw in read_source_episodes(source, split, images=resolved.image_fields):
                    try:
                        episode = map_episode(raw, resolved)
                        yield split, episode, episode["episode_metadata"]["episode_id"], ""
                    except MappingError as e:
                        yield split, None, e.episode_id or raw.where, e.reason + (f" [{e.field}]" if e.field else "")

        names = {"state": list(resolved.state_names), "action": list(resolved.action_names)}
        title = f"{source.name} through mapping {resolved.mapping.name} ({source.path})"
        total = sum(source.splits.values())
    else:
        episodes = lambda: _our_episodes(dataset_dir)
        info = Path(dataset_dir) / MAPPING_INFO
        recorded = json.loads(info.read_text()) if info.exists() else {}
        names = {key: recorded[f"{key}_names"] for key in ("state", "action") if f"{key}_names" in recorded}
        title = str(Path(dataset_dir).absolute())
        total = sum(split.num_examples for split in open_dataset(dataset_dir).info.splits.values())
    rows, chosen, summaries = [], {}, []
    bar = tqdm(episodes(), total=total, desc="reading episodes", unit="ep", disable=not progress, leave=False)
    for number, (split, episode, episode_id, problem) in enumerate(bar):
        if episode is None:
            rows.append(EpisodeRow(number=number, split=split, episode_id=episode_id, problem=problem))
            continue
        rows.append(_row(number, split, episode))
        summaries.append((episode["steps"]["action"], episode["steps"]["observation"]["state"]))
        if choose(number, episode_id):
            chosen[episode_id] = episode
    stats_file = Path(dataset_dir) / statistics.FILENAME
    stats = (statistics.load_statistics(dataset_dir) if not mapping and stats_file.exists()
             else statistics.compute_statistics(summaries))
    return DatasetView(title=title, rows=rows, chosen=chosen, statistics=stats, names=names)


def episode_table(view: DatasetView) -> Table:
    table = Table(title=escape(view.title), title_justify="left")
    for column, justify in (("#", "right"), ("split", "left"), ("episode", "left"), ("steps", "right"),
                            ("success", "left"), ("interventions", "right"), ("source", "left"),
                            ("instruction", "left")):
        table.add_column(column, justify=justify)
    for row in view.rows:
        if row.problem:
            table.add_row(str(row.number), row.split, escape(row.episode_id), "-", "[red]not mapped[/red]", "-", "-",
                          f"[red]{escape(row.problem)}[/red]")
        else:
            table.add_row(str(row.number), row.split, escape(row.episode_id), str(row.length),
                          "[green]yes[/green]" if row.success else "no", str(row.interventions), row.source,
                          escape(row.instruction))
    good = [r for r in view.rows if not r.problem]
    if good:
        unmapped = len(view.rows) - len(good)
        table.caption = (f"{len(good)} episode(s), {sum(r.success for r in good)} successful, "
                         f"{sum(r.length for r in good)} steps, {sum(r.interventions for r in good)} "
                         f"intervention step(s)" + (f"; {unmapped} not mapped" if unmapped else ""))
    return table


def write_pictures(view: DatasetView, out_dir: str, formats: set[str], frames: int, fps: float) -> list[str]:
    written = statistics_plots(view.statistics, out_dir, view.names)
    for episode_id, episode in view.chosen.items():
        stem = os.path.join(out_dir, "episode_" + re.sub(r"[^A-Za-z0-9_.-]", "_", episode_id))
        if "png" in formats:
            written.append(contact_sheet(episode, stem + ".png", frames=frames, names=view.names))
        if "mp4" in formats:
            written.append(episode_video(episode, stem + ".mp4", fps=fps, names=view.names))
    return written


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    console = Console(width=shutil.get_terminal_size((160, 40)).columns)
    try:
        view = load_view(args.dataset_dir, args.mapping, args.episodes, progress=not args.no_progress)
    except (MappingError, MappingConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    console.print(episode_table(view))
    if args.out:
        if not view.chosen:
            print(f"error: no episode matches --episodes={args.episodes}", file=sys.stderr)
            return 1
        for path in write_pictures(view, args.out, set(args.formats.split(",")), args.frames, args.fps):
            console.print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

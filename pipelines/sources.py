"""Input side of the conversion: find demo files and read them into validated episodes.

Two input formats are understood, chosen by file suffix:
  * `.npz`: our raw episode files (tools/record_demos.py), one episode per file;
  * `.pkl` / `.pickle`: HIL-SERL / ConRFT transition pickles, any number of episodes per file.
    Loading a pickle can run code, so pickles are read only when the user trusts them
    (`allow_pickles`, the converter's `--allow_pickles`), and then with the restricted unpickler
    (`datasets/safe_pickle.py`); otherwise each one is dead-lettered unread.
Reading never raises for bad data: each problem comes back as a `DeadLetter` naming the file
(and episode) and the reason, so one damaged file never stops the good ones from converting.
"""

from __future__ import annotations

import dataclasses
import glob
import os
from pathlib import Path
from typing import Iterator, Sequence

from vlarft.datasets import hilserl_pickle, raw_episodes
from vlarft.datasets.schema import Episode, EpisodeSpec, validate_episode

INPUT_SUFFIXES = (raw_episodes.SUFFIX, *hilserl_pickle.SUFFIXES)
PICKLES_NOT_ALLOWED = ("not read: loading a pickle can run code hidden in it; pass --allow_pickles to "
                       "read HIL-SERL/ConRFT pickles (with a restricted, data-only unpickler)")


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    """An input that could not become an episode."""

    file: str
    reason: str
    episode_id: str = ""

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def discover_inputs(patterns: Sequence[str]) -> list[str]:
    """Expands directories and glob patterns into a sorted, de-duplicated list of input files."""
    files = set()
    for pattern in patterns:
        if os.path.isdir(pattern):
            candidates = [str(p) for p in Path(pattern).rglob("*")]
        else:
            candidates = glob.glob(pattern, recursive=True) or ([pattern] if os.path.exists(pattern) else [])
        files.update(os.path.abspath(c) for c in candidates
                     if c.endswith(INPUT_SUFFIXES) and os.path.isfile(c)
                     and not os.path.basename(c).startswith("."))
    return sorted(files)


def split_unreadable_names(files: Sequence[str]) -> tuple[list[str], list[DeadLetter]]:
    """(files whose names are valid UTF-8, dead letters for the others): datasets, logs and Beam
    carry names as UTF-8 text, so such a file is reported, not converted."""
    usable, dead = [], []
    for path in files:
        try:
            path.encode("utf-8")
            usable.append(path)
        except UnicodeEncodeError:
            shown = path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            dead.append(DeadLetter(file=shown, reason="the file name is not valid UTF-8; rename the file to "
                                                      "convert it"))
    return usable, dead


def read_episodes(path: str, spec: EpisodeSpec, pickle_config: hilserl_pickle.PickleImportConfig,
                  allow_pickles: bool = False) -> Iterator[Episode | DeadLetter]:
    """Every episode of one input file, validated against `spec`, or dead letters; a pickle is
    only opened when `allow_pickles`."""
    if path.endswith(raw_episodes.SUFFIX):
        try:
            episode, _ = raw_episodes.read_raw_episode(path, decode_frames=False)  # JPEG bytes pass through
            episode["episode_metadata"]["file_path"] = path
            yield validate_episode(episode, spec)
        except raw_episodes.RawEpisodeError as e:
            yield DeadLetter(file=path, reason=e.reason)
        except ValueError as e:  # SchemaError names the episode, step and field
            yield DeadLetter(file=path, reason=str(e), episode_id=getattr(e, "episode_id", "") or "")
        return
    if not allow_pickles:
        yield DeadLetter(file=path, reason=PICKLES_NOT_ALLOWED)
        return
    try:
        episodes = hilserl_pickle.episodes_from_pickle(path, pickle_config, spec)
    except (OSError, ValueError) as e:
        yield DeadLetter(file=path, reason=str(e))
        return
    for item in episodes:
        if isinstance(item, Exception):
            yield DeadLetter(file=path, reason=str(item), episode_id=getattr(item, "episode_id", "") or "")
        else:
            yield item


def infer_spec(paths: Sequence[str], pickle_config: hilserl_pickle.PickleImportConfig,
               allow_pickles: bool = False) -> EpisodeSpec:
    """The spec of the first readable input; the dataset's episodes must all match it."""
    problems = []
    for path in paths:
        if path.endswith(hilserl_pickle.SUFFIXES) and not allow_pickles:
            problems.append(f"{path}: {PICKLES_NOT_ALLOWED}")
            continue
        try:
            if path.endswith(raw_episodes.SUFFIX):
                return raw_episodes.read_raw_episode(path, decode_frames=False)[1]
            transitions = hilserl_pickle.load_transitions(path)
            return hilserl_pickle.spec_of(transitions[0], pickle_config)
        except (OSError, ValueError, KeyError, TypeError) as e:
            problems.append(str(e) if str(path) in str(e) else f"{path}: {e}")
    raise ValueError("no readable input to take the dataset spec from:\n  " + "\n  ".join(problems))

"""Putting a finished directory in place of an old one so that a crash at any point is recoverable
(converted datasets, policy exports).

A writer assembles `.incomplete-<name>` beside the final `<name>` and marks it complete by
writing its marker file last (a dataset's `conversion.json`, an export's `policy.json`).
`swap_into_place` then renames the old `<name>` (if any) to `.replaced-<name>`, renames the new
one to `<name>` and deletes the old one. Each rename is atomic, so a `kill -9` leaves one of these
states, which `recover_interrupted_swap` (run by the next writer) resolves:

  * `<name>` missing, `.replaced-<name>` present, `.incomplete-<name>` complete: killed between
    the two renames; the swap is finished (the new directory goes in);
  * `<name>` missing, `.replaced-<name>` present, no complete `.incomplete-<name>`: the old
    directory is restored;
  * `<name>` present and `.replaced-<name>` present: killed before the old one was deleted; it
    is deleted now.

Readers that must not write use `readable_dir`, which finds the directory a recovery would leave.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def incomplete_dir(final_dir: Path) -> Path:
    """Where the writer assembles the directory bound for `final_dir`."""
    return final_dir.with_name(f".incomplete-{final_dir.name}")


def replaced_dir(final_dir: Path) -> Path:
    """Where the old directory waits while the new one is moved in."""
    return final_dir.with_name(f".replaced-{final_dir.name}")


def swap_into_place(work_dir: Path, final_dir: Path, marker: str) -> None:
    """Replaces `final_dir` by `work_dir`, which must hold `marker` (see the module docstring)."""
    if not (work_dir / marker).exists():
        raise RuntimeError(f"{work_dir} is not complete (no {marker}); refusing to swap it in")
    old = replaced_dir(final_dir)
    shutil.rmtree(old, ignore_errors=True)
    if final_dir.exists():
        os.rename(final_dir, old)
    os.rename(work_dir, final_dir)
    _sync_dir(final_dir.parent)
    shutil.rmtree(old, ignore_errors=True)


def recover_interrupted_swap(final_dir: Path, marker: str) -> str | None:
    """Resolves what an interrupted `swap_into_place` left (module docstring); says what it did."""
    old, new = replaced_dir(final_dir), incomplete_dir(final_dir)
    if not old.exists():
        return None
    if final_dir.exists():
        shutil.rmtree(old)
        return f"deleted {old}, left by an interrupted swap (the new one was already in place)"
    if (new / marker).exists():
        os.rename(new, final_dir)
        _sync_dir(final_dir.parent)
        shutil.rmtree(old)
        return f"finished an interrupted swap: the complete {new} is now {final_dir}"
    os.rename(old, final_dir)
    _sync_dir(final_dir.parent)
    return f"restored {final_dir} from {old}: an interrupted swap had moved it aside"


def readable_dir(final_dir: Path, marker: str) -> Path:
    """The directory `recover_interrupted_swap` would leave at `final_dir`, without changing anything."""
    if final_dir.exists() or not replaced_dir(final_dir).exists():
        return final_dir
    new = incomplete_dir(final_dir)
    return new if (new / marker).exists() else replaced_dir(final_dir)


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

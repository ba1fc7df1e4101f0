"""Putting a finished dataset in place of an old one so that a crash at any point is recoverable.

A job assembles `<name>/.incomplete-<version>` and marks it complete by writing its
`conversion.json` last. `swap_into_place` then renames the old `<name>/<version>` (if any) to
`<name>/.replaced-<version>`, renames the new one to `<name>/<version>` and deletes the old one.
Each rename is atomic, so a `kill -9` leaves one of these states, which
`recover_interrupted_swap` (run at the start of the next job) resolves:

  * `<version>` missing, `.replaced-<version>` present, `.incomplete-<version>` complete:
    killed between the two renames; the swap is finished (the new dataset goes in);
  * `<version>` missing, `.replaced-<version>` present, no complete `.incomplete-<version>`:
    the old dataset is restored;
  * `<version>` present and `.replaced-<version>` present: killed before the old one was
    deleted; it is deleted now.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

COMPLETE_MARKER = "conversion.json"  # written (atomically) last into a finished dataset


def incomplete_dir(final_dir: Path) -> Path:
    """Where the job assembles the dataset bound for `final_dir`."""
    return final_dir.with_name(f".incomplete-{final_dir.name}")


def replaced_dir(final_dir: Path) -> Path:
    """Where the old dataset waits while the new one is moved in."""
    return final_dir.with_name(f".replaced-{final_dir.name}")


def swap_into_place(work_dir: Path, final_dir: Path) -> None:
    """Replaces `final_dir` by the complete `work_dir` (see the module docstring)."""
    if not (work_dir / COMPLETE_MARKER).exists():
        raise RuntimeError(f"{work_dir} is not complete (no {COMPLETE_MARKER}); refusing to swap it in")
    old = replaced_dir(final_dir)
    shutil.rmtree(old, ignore_errors=True)
    if final_dir.exists():
        os.rename(final_dir, old)
    os.rename(work_dir, final_dir)
    _sync_dir(final_dir.parent)
    shutil.rmtree(old, ignore_errors=True)


def recover_interrupted_swap(final_dir: Path) -> str | None:
    """Resolves what an interrupted `swap_into_place` left (module docstring); says what it did."""
    old, new = replaced_dir(final_dir), incomplete_dir(final_dir)
    if not old.exists():
        return None
    if final_dir.exists():
        shutil.rmtree(old)
        return f"deleted {old}, left by an interrupted swap (the new dataset was already in place)"
    if (new / COMPLETE_MARKER).exists():
        os.rename(new, final_dir)
        _sync_dir(final_dir.parent)
        shutil.rmtree(old)
        return f"finished an interrupted swap: the complete {new} is now {final_dir}"
    os.rename(old, final_dir)
    _sync_dir(final_dir.parent)
    return f"restored {final_dir} from {old}: an interrupted swap had moved it aside"


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

"""Compiled XLA programs kept on disk between runs (JAX's persistent compilation cache).

A stage spends tens of seconds compiling its update and acting functions before the first step
(the tiny RLPD pixel online command: ~34 of its ~80 s on a 2-core CPU). The programs depend only
on the code, the shapes and the XLA/JAX versions, so a resumed run, the next seed, or an
evaluation of the same policy can load them instead: JAX keys each entry by a hash of the
program, the compile options, the backend (on a CPU: its instruction-set features, so a home
folder shared by different machines is safe) and the versions, so a stale entry is never used.

`enable_compilation_cache()` is called by the command lines before their first compilation:
- `VLARFT_COMPILATION_CACHE=off` leaves the cache off;
- `VLARFT_COMPILATION_CACHE=DIR` (or JAX's own `JAX_COMPILATION_CACHE_DIR`) chooses the folder;
- otherwise `$XDG_CACHE_HOME/vlarft/xla` (`~/.cache/vlarft/xla`).
The folder is created private (mode 0700): its files are executable code that the process
loads, so it must be writable by the user alone (see WORKSPACE's threat model). It is bounded
(`MAX_BYTES`: the least recently used programs are deleted beyond it) and every read and write
holds a file lock, so an actor and a learner compiling the same program at once never read a
half-written entry (both need the `filelock` package, a dependency).

Only programs that took `MIN_COMPILE_S` or more to compile are written. JAX's bounded cache
scans the whole folder on every write, so writing each of a stage's ~500 small op-by-op
programs made a first run slower. The tiny RLPD pixel command went from 70 s to 79-91 s, with
its XLA compile time at 42.8 s instead of 28.8 s. The few programs over 0.1 s hold three
quarters of the compile time there: 8 of 547 programs, 21.4 of 28.1 s.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ENV = "VLARFT_COMPILATION_CACHE"
MIN_COMPILE_S = 0.1  # seconds: programs compiled faster are not written (see above)
MAX_BYTES = 1 << 30


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vlarft" / "xla"


def enable_compilation_cache(directory: str | os.PathLike | None = None) -> Path | None:
    """Turns JAX's persistent compilation cache on in `directory` (None: from the environment, see
    the module docstring) and returns the folder; None when the cache stays off. Call it before the
    process compiles anything: JAX opens its cache once, at the first compilation."""
    import jax  # here: the command lines import this module before parsing their arguments

    setting = os.environ.get(ENV, "")
    if directory is None and setting.lower() == "off":
        return None
    chosen = (directory or setting or jax.config.jax_compilation_cache_dir  # JAX_COMPILATION_CACHE_DIR
              or default_cache_dir())
    path = Path(chosen).expanduser().absolute()
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        _refuse_shared(path)
    except OSError as e:  # a cache is an optimisation: run without it, say why
        print(f"warning: compilation cache off: {e}", file=sys.stderr)
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_S)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
    return path


def _refuse_shared(path: Path) -> None:
    """Raises PermissionError when another user could write the cache folder."""
    info = path.stat()
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise PermissionError(f"{path} belongs to another user")
    if info.st_mode & 0o022:
        raise PermissionError(f"{path} is writable by group or others (mode {info.st_mode & 0o777:o}); "
                              f"chmod 700 it or set {ENV}=off")

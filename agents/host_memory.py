"""Keeps the memory XLA CPU frees after each step mapped in the process, for the next step.

XLA CPU allocates every run's temporary and output buffers with the C library's `malloc` and
frees them when the run ends. glibc serves an allocation above its mmap threshold (32 MiB at
most) with a fresh `mmap` and unmaps it on `free`, so every learner step faults its buffers in
again, page by page, each page zeroed by the kernel. The tiny Cal-QL update at batch 256 (57 MiB
of temporaries): ~13,700 page faults and ~30 ms of kernel time per step, a third of its wall time
(WORKSPACE, Speed).

`keep_freed_memory()` sets glibc's `mallopt` so large blocks come from the heap and freed ones
stay there for the next step: no `mmap` for allocations (`M_MMAP_MAX` 0), up to `TRIM_THRESHOLD`
of free memory kept at the heap's top before any is returned, `TOP_PAD` more taken each time the
heap grows. The cost: memory the process freed is not given back to the system until the free
part at the heap's top passes `TRIM_THRESHOLD`, as a caching allocator (TF's, PyTorch's) does.

Applied with XLA's flags by `process_settings.use_process_settings()`, which the command lines
that train or evaluate and the speed benchmarks call. It applies to the process that calls it
(the processes a command starts call it in their own `main`). `VLARFT_KEEP_FREED_MEMORY=0`
turns it off; elsewhere than on glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import os
import sys
from typing import Mapping

ENV = "VLARFT_KEEP_FREED_MEMORY"
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4  # glibc's <malloc.h>
TRIM_THRESHOLD = 1 << 30  # above a step's largest temporaries (small pixel critic update: ~1 GiB)
TOP_PAD = 64 << 20


def keep_freed_memory(environ: Mapping[str, str] = os.environ) -> bool:
    """Sets glibc's allocator to keep freed memory for reuse (see the module docstring); returns
    whether it did (False when `VLARFT_KEEP_FREED_MEMORY=0` or the C library is not glibc)."""
    if environ.get(ENV, "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # glibc only: musl's mallopt accepts nothing
    except (OSError, AttributeError):
        return False
    settings = ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_TOP_PAD, TOP_PAD))
    return all(libc.mallopt(param, value) == 1 for param, value in settings)

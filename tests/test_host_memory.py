"""`keep_freed_memory`, applied as the command lines apply it (`use_process_settings`): a large block
freed and allocated again is not faulted in again, page by page (what XLA CPU's buffers cost each
step under glibc's defaults); off with the variable."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Allocates a 64 MiB block, writes it, frees it; then again, counting the page faults of the
# second round. Under glibc's defaults the block is an mmap given back on free: ~16,384 faults.
PROGRAM = """
import ctypes, resource
from vlarft.agents.process_settings import use_process_settings
kept = use_process_settings()["keep_freed_memory"]
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
size = 64 << 20
def round_trip():
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
round_trip()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
round_trip()
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults_of_a_second_round(setting: str) -> tuple[str, int]:
    env = dict(os.environ, VLARFT_KEEP_FREED_MEMORY=setting)
    done = subprocess.run([sys.executable, "-c", PROGRAM], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    kept, faults = done.stdout.split()
    return kept, int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_a_freed_block_is_reused_without_faulting_it_in_again():
    kept, faults = faults_of_a_second_round("1")
    assert kept == "True" and faults < 64, faults  # 16,384 pages of 4 KiB
    kept, faults_by_default = faults_of_a_second_round("0")
    assert kept == "False"
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if not (thp.exists() and "[always]" in thp.read_text()):  # 2 MiB pages would fault only 32 times
        assert faults_by_default > 10_000, faults_by_default

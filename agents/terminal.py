"""A terminal a person can watch: library start-up chatter stays out of it unless `--verbose`.

`quiet_terminal(verbose)` must run before TensorFlow, Reverb or Beam are imported. Unless
`verbose`, it
- sets `TF_CPP_MIN_LOG_LEVEL=2` (TF's C++ INFO/WARNING lines) and quietens absl and Python logging
  of TensorFlow, JAX and Beam to warnings;
- drops Beam's "apitools not found" warning (a Python logging record on the root logger);
- filters file descriptor 2 at the OS level: C++ code (Reverb, TensorFlow) writes there directly,
  bypassing Python. Descriptor 2 becomes a pipe read by a thread that forwards every line except the
  known noise (`NOISE`) to the real standard error. Python's own `sys.stderr` is re-opened on the
  real standard error, so progress bars still see a terminal and are drawn in place.

Everything else (errors, warnings, our own lines) reaches the terminal unchanged.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import select
import sys
import threading

# Lines C++ libraries print at start-up or for every sampler; they say nothing a person can act on.
NOISE = re.compile(
    rb"Sampler and server are owned by the same process"
    rb"|\[reverb/cc/[^\]]*\]\s*(Initializing TFRecordCheckpointer|Loading latest checkpoint|Started replay server"
    rb"|Shutting down replay server|Stored checkpoint to)"
    rb"|cpu_feature_guard\.cc"
    rb"|To enable the following instructions: .* rebuild TensorFlow"
    rb"|oneDNN custom operations are on"
    rb"|Could not find cuda drivers|Unable to register cu(DNN|FFT|BLAS) factory|TF-TRT Warning"
)
APITOOLS_WARNING = "apitools not found"
QUIET_LOGGERS = ("tensorflow", "jax", "absl", "apache_beam", "orbax", "h5py")


class _DropApitools(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return APITOOLS_WARNING not in record.getMessage()


_installed: "StderrFilter | None" = None


def add_verbose_argument(parser) -> None:
    """The `--verbose` flag of a command line."""
    parser.add_argument("--verbose", action="store_true",
                        help="also show library start-up notices and Reverb's per-sampler lines")


def quiet_command_line(argv: list[str]) -> None:
    """`quiet_terminal` for a script's command line: verbose when it has `--verbose`."""
    quiet_terminal(verbose="--verbose" in argv)


def quiet_terminal(verbose: bool = False) -> None:
    """Keeps library noise off the terminal unless `verbose` (call before importing TF/Reverb/Beam)."""
    global _installed
    if verbose or _installed is not None:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = max(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"), "2")
    logging.getLogger().addFilter(_DropApitools())
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    _installed = StderrFilter(NOISE)
    atexit.register(_installed.close)


class StderrFilter:
    """Descriptor 2 -> a pipe; a thread forwards its lines, minus those matching `noise`, to the
    original standard error. Python's `sys.stderr` writes to the original one directly."""

    def __init__(self, noise: re.Pattern):
        sys.stderr.flush()
        self.noise = noise
        self.terminal = os.dup(2)
        read, write = os.pipe()
        os.dup2(write, 2)
        os.close(write)
        self._read = read
        sys.stderr = open(self.terminal, "w", buffering=1, closefd=False, errors="backslashreplace")
        self._thread = threading.Thread(target=self._forward, name="stderr-filter", daemon=True)
        self._thread.start()

    def _forward(self) -> None:
        pending = b""
        while True:
            ready, _, _ = select.select([self._read], [], [], 0.2)
            if not ready:  # a partial line (a prompt, a bar) waits no longer than this, unless it is noise
                if pending and not self.noise.search(pending):
                    self._write(pending)
                    pending = b""
                continue
            chunk = os.read(self._read, 65536)
            if not chunk:
                break
            *lines, pending = (pending + chunk).split(b"\n")
            kept = [line for line in lines if not self.noise.search(line)]
            if kept:
                self._write(b"\n".join(kept) + b"\n")
        if pending and not self.noise.search(pending):
            self._write(pending)
        os.close(self._read)

    def _write(self, data: bytes) -> None:
        try:
            os.write(self.terminal, data)
        except OSError:
            pass

    def close(self) -> None:
        """Restores descriptor 2 and forwards what is left in the pipe."""
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(self.terminal, 2)  # closes the pipe's last write end: the thread sees end of file
        self._thread.join(timeout=2.0)

"""Ctrl-C and SIGTERM held back until a block of work ends.

Two kinds of block need it:
- a write that must not be left half done (a checkpoint, the watermark protocol): every signal is
  held, and one whose handler would have killed the process becomes a KeyboardInterrupt at the
  block's end (`interrupts_deferred()`);
- a call into a C library through ctypes with Python argument converters (PyOpenGL's EGL calls in
  MuJoCo's renderer): a KeyboardInterrupt raised by a Python signal handler inside it surfaces as
  `ctypes.ArgumentError: argument 3: KeyboardInterrupt`, which no `except KeyboardInterrupt`
  catches, so a Ctrl-C during a render crashed the recording tool instead of stopping it. Only
  signals with a Python handler can raise there; those are held and handed to their handler when
  the block ends (`interrupts_deferred(python_handlers_only=True)`).

Handlers can only be changed in the main thread (the only one Python runs signal handlers in),
so elsewhere a block does nothing; nested blocks leave the decision to the outermost one.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

DEFERRED = (signal.SIGINT, signal.SIGTERM)

_deferring = False


@contextlib.contextmanager
def interrupts_deferred(python_handlers_only: bool = False) -> Iterator[None]:
    """Ctrl-C / SIGTERM arriving inside the block take effect when it ends: the handler they had
    is called (`default_int_handler` raises KeyboardInterrupt), an ignored one stays ignored, and
    a default action (SIGTERM's: terminate) becomes KeyboardInterrupt, so the block is never cut
    short. `python_handlers_only` holds only the signals that have a Python handler, leaving the
    others their default action during the block."""
    global _deferring
    if _deferring or threading.current_thread() is not threading.main_thread():
        yield
        return
    signals = [s for s in DEFERRED if not python_handlers_only or callable(signal.getsignal(s))]
    if not signals:
        yield
        return
    _deferring = True
    received: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: received.append(signum)) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _deferring = False
    for sig in dict.fromkeys(received):
        handler = previous[sig]
        if callable(handler):
            handler(sig, None)
        elif handler != signal.SIG_IGN:
            raise KeyboardInterrupt

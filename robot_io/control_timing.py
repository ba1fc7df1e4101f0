"""Keeping a robot's control loop on time in a Python process that also does other work.

Two things in CPython stall a thread that waits on nothing of its own:

- The garbage collector's full pass (the oldest generation) holds the GIL while it walks every
  tracked object. With TensorFlow, JAX, Reverb and a model loaded that is ~500k objects and
  0.1-0.27 s per pass. Tracing a learner's update allocates enough to trigger several passes.
- The GIL's switch interval. A thread that wants the GIL back (the actor after a MuJoCo step or a
  jitted call) waits up to the interval (5 ms by default) while another thread runs Python, such
  as the learner tracing its update. An actor step takes the GIL back dozens of times.

`steady_control()` holds both off while a control loop runs: the online actor's episodes and
evaluation episodes (`agents/evaluation.py`). It freezes the objects that exist when the loop
starts, so a full pass walks only what was allocated since; freezing and unfreezing are O(1),
and garbage frozen with them is collectable again after the block. It also shortens the switch
interval to `SWITCH_INTERVAL_S`. `ControlPauses` measures what is left: the time from each
observation to the next action sent, which a robot's watchdog also sees.
"""

from __future__ import annotations

import contextlib
import gc
import sys
import threading
import time
from array import array

import numpy as np

SWITCH_INTERVAL_S = 0.0005  # the GIL handover a waiting actor thread gets (CPython's default: 0.005)

_lock = threading.Lock()
_active = 0  # steady_control blocks open (nested or in several actors of one process)
_previous_interval = None


@contextlib.contextmanager
def steady_control():
    """While open: the objects alive at entry are frozen out of the garbage collector's passes
    and the GIL's switch interval is `SWITCH_INTERVAL_S`. Both are restored when the last open
    block exits (the frozen objects go back to the collector)."""
    global _active, _previous_interval
    with _lock:
        if _active == 0:
            gc.freeze()
            _previous_interval = sys.getswitchinterval()
            sys.setswitchinterval(SWITCH_INTERVAL_S)
        _active += 1
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0:
                sys.setswitchinterval(_previous_interval)
                gc.unfreeze()


class ControlPauses:
    """The control loop's pauses: seconds from an observation's arrival to the next action sent."""

    def __init__(self):
        self.seconds = array("d")
        self._observed_at: float | None = None

    def observed(self) -> None:
        """An observation arrived (reset or step returned)."""
        self._observed_at = time.monotonic()

    def acting(self) -> None:
        """The next action is being sent: the pause since the observation is recorded."""
        if self._observed_at is not None:
            self.seconds.append(time.monotonic() - self._observed_at)
            self._observed_at = None

    def summary(self) -> dict:
        """Pauses counted and their median, 99th percentile and maximum in milliseconds."""
        if not self.seconds:
            return {"pauses": 0}
        ms = np.array(self.seconds, dtype=np.float64) * 1e3
        return {"pauses": len(ms), "median_ms": round(float(np.median(ms)), 2),
                "p99_ms": round(float(np.percentile(ms, 99)), 2), "max_ms": round(float(ms.max()), 2)}

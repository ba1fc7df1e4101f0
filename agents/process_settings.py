"""The settings a process takes before its first JAX computation, in one call.

`use_process_settings()` applies, in this process:

* XLA's default flags (`xla_flags.py`): added to `XLA_FLAGS`, which the processes it starts
  (actors, Beam workers) inherit;
* the allocator setting that keeps the memory XLA CPU frees for the next step
  (`host_memory.py`).

The command lines that train or evaluate (`agents/train.py`, `tools/eval_policy.py`,
`tools/run_sim_pipeline.py`, `tools/benchmark_conrft.py`), the speed benchmarks that run learner
or acting programs, and the tests' process call it first thing in `main`. Each setting keeps its
own way out: `XLA_FLAGS` naming a flag wins over its default, `VLARFT_KEEP_FREED_MEMORY=0` turns
the allocator setting off.
"""

from __future__ import annotations

import os
from typing import MutableMapping

from vlarft.agents.host_memory import keep_freed_memory
from vlarft.agents.xla_flags import use_default_xla_flags


def use_process_settings(environ: MutableMapping[str, str] = os.environ) -> dict:
    """Applies both settings; returns {"xla_flags": the flags added, "keep_freed_memory": whether
    the allocator setting was applied}."""
    return {"xla_flags": use_default_xla_flags(environ),
            "keep_freed_memory": keep_freed_memory(environ)}

"""The shared ending of the training command lines: run the work, map its failures to exit codes,
print its result as the last line of standard output (one JSON object)."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable


def finite_or_none(value):
    """`value` with every non-finite float (NaN, +-inf), also inside dicts and lists, as None (JSON null)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def run_cli(work: Callable[[], dict], interrupted: str,
            errors: tuple[type[BaseException], ...] = (ValueError, OSError, RuntimeError)) -> int:
    """Runs `work()` and prints its result as JSON (non-finite floats as null): exit code 0.
    `errors` -> "error: ..." on stderr, 1; FloatingPointError (training diverged) -> 3;
    KeyboardInterrupt -> `interrupted` on stderr, 130."""
    try:
        result = work()
    except errors as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except FloatingPointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130
    print(json.dumps(finite_or_none(result)), flush=True)
    return 0

"""Streams episodes into replay tables as transitions that share storage with their steps.

Every appended step holds {"observation": {key: o_t[key]}, "action", "reward", "discount",
"mc_return", "intervention"}. After step t+1 is appended, the item of transition t is created
from `writer.history` references: o_t, a_t, r_t, discount_t, G_t, intervention_t of step t and
`next_observation` = the observation cells of step t+1. So o_{t+1} is stored (and sent) once and
referenced by two items: images are never duplicated. Steps are stored packed (`packing.py`:
one float32 vector + image columns; an item is a length-2 slice of each), the layout derived
from the first step's fields.

`mc_return` is the Monte-Carlo return-to-go (`returns.py`) when the whole episode is known
(offline data). An online actor streaming step by step does not know it yet; the online stage
does not use it (no Cal-QL term, LossConfig.cql_alpha = 0), so it may write 0 there.
"""

from __future__ import annotations

from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import reverb

import tensorflow as tf

from vlarft.datasets.replay.packing import STEP_FIELDS, StepLayout

Router = Callable[[Mapping], Sequence[str]]
_DTYPES = {"action": np.float32, "reward": np.float32, "discount": np.float32,
           "mc_return": np.float32, "intervention": np.bool_}


def route_by_intervention(online_table: str = "online", demo_table: str = "demo") -> Router:
    """Online collection routing: every transition to `online_table`, human-intervention
    transitions also to `demo_table`."""
    def route(step: Mapping) -> tuple[str, ...]:
        return (online_table, demo_table) if step["intervention"] else (online_table,)
    return route


class TransitionWriter:
    """Writes steps to a Reverb server; each transition goes to the tables its step routes to.

    Args:
      client: a reverb.Client.
      tables_for_step: a table name, a sequence of names, or a function step -> names (e.g.
        `route_by_intervention()`); transition t is routed by its first step t.

    Usage: `append(step)` once per step (the final observation included), then `end_episode()`;
    or `write_episode(...)` for a whole RLDS episode.
    """

    def __init__(self, client: reverb.Client, tables_for_step: str | Sequence[str] | Router):
        if isinstance(tables_for_step, str):
            tables_for_step = (tables_for_step,)
        if not callable(tables_for_step):
            fixed = tuple(tables_for_step)
            tables_for_step = lambda step: fixed  # noqa: E731
        self._route = tables_for_step
        self._writer = client.trajectory_writer(num_keep_alive_refs=2)
        self._pending: Sequence[str] | None = None  # tables of the previous step's transition
        self._layout: StepLayout | None = None  # from the first step
        self.items_written: dict[str, int] = {}

    def append(self, step: Mapping) -> None:
        """Appends one step; creates the item of the previous step's transition."""
        step = _canonical_step(step)
        if self._layout is None:
            self._layout = StepLayout.of_signature(_step_signature(step))
        self._writer.append(self._layout.pack_step(step))
        if self._pending is not None:
            transition = self._last_transition()
            for table in self._pending:
                self._writer.create_item(table, 1.0, transition)
                self.items_written[table] = self.items_written.get(table, 0) + 1
        self._pending = tuple(self._route(step))

    def flush(self, timeout_ms: int | None = None) -> None:
        """Sends every item created so far to the server now (online actors stream step by step)."""
        self._writer.flush(timeout_ms=timeout_ms)

    def end_episode(self, timeout_ms: int | None = None) -> None:
        """Blocks until every item is on the server; the next `append` starts an episode."""
        self._writer.end_episode(timeout_ms=timeout_ms)
        self._pending = None

    def write_episode(self, steps: Mapping, observation_keys: Sequence[str],
                      mc_return: np.ndarray) -> int:
        """Writes an RLDS episode's step columns (T+1 steps) and ends it; returns T."""
        count = 0
        for count, step in enumerate(rlds_steps(steps, observation_keys, mc_return)):
            self.append(step)
        self.end_episode()
        return count

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> "TransitionWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _last_transition(self) -> dict:
        history = self._writer.history
        return {"packed": history["packed"][-2:],
                "columns": {key: column[-2:] for key, column in history["columns"].items()}}


def rlds_steps(steps: Mapping, observation_keys: Sequence[str],
               mc_return: np.ndarray) -> Iterator[dict]:
    """The writer's step dicts of an RLDS episode's columns (see the module docstring).

    `mc_return` holds the T returns of the real transitions; the final observation's step
    gets 0 (no item reads it). `embedding` is read from the step field of that name.
    """
    length = len(steps["is_first"])
    if len(mc_return) != length - 1:
        raise ValueError(f"{len(mc_return)} returns for an episode of {length - 1} transitions")
    returns = np.append(np.asarray(mc_return, np.float32), np.float32(0.0))
    observation = {key: _observation_column(steps, key) for key in observation_keys}
    for t in range(length):
        step = {name: steps[name][t] for name in STEP_FIELDS if name != "mc_return"}
        step["mc_return"] = returns[t]
        step["observation"] = {key: column[t] for key, column in observation.items()}
        yield step


def _observation_column(steps: Mapping, key: str) -> np.ndarray:
    if key in steps["observation"]:
        return steps["observation"][key]
    if key == "embedding" and "embedding" in steps:
        return steps["embedding"]
    raise KeyError(f"episode has no observation field {key!r}")


def _step_signature(step: Mapping) -> dict:
    """The transition signature of items made of this step (`canonical_step`'s output)."""
    def spec(value):
        return tf.TensorSpec(value.shape, tf.as_dtype(value.dtype))

    observation = {key: spec(value) for key, value in step["observation"].items()}
    return {"observation": observation, **{name: spec(step[name]) for name in STEP_FIELDS},
            "next_observation": observation}


def _canonical_step(step: Mapping) -> dict:
    missing = [name for name in ("observation", *STEP_FIELDS) if name not in step]
    if missing:
        raise KeyError(f"step lacks field(s) {missing}")
    out = {name: np.asarray(step[name], _DTYPES[name]) for name in STEP_FIELDS}
    out["observation"] = {key: np.asarray(value) for key, value in step["observation"].items()}
    return out

"""`make_env("<backend>:<task>", **kwargs)`: one entry point for every robot environment.

Backends are registered in `BACKENDS` (prefix -> how to list its tasks and build an env). Only
the MuJoCo simulator (`sim:`) exists so far; real robots add an entry. Backends are imported
lazily, so listing or building one never imports another's dependencies.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import gymnasium as gym


@dataclasses.dataclass(frozen=True)
class Backend:
    """How to list the tasks of an environment family and build one of them."""

    tasks: Callable[[], tuple[str, ...]]
    make: Callable[..., gym.Env]  # make(task, **kwargs)


def sim_tasks() -> tuple[str, ...]:
    """Names of the simulated tasks (`sim:<task>`)."""
    from vlarft.robot_io.sim.tasks import TASKS

    return tuple(sorted(TASKS))


def _make_sim(task: str, **kwargs) -> gym.Env:
    from vlarft.robot_io.sim import SimRobotEnv

    return SimRobotEnv(task=task, **kwargs)


BACKENDS: dict[str, Backend] = {"sim": Backend(tasks=sim_tasks, make=_make_sim)}


def list_envs() -> tuple[str, ...]:
    """Every name `make_env` accepts, e.g. `sim:pick_cube`."""
    return tuple(f"{prefix}:{task}" for prefix, backend in BACKENDS.items() for task in backend.tasks())


def make_env(name: str, **kwargs) -> gym.Env:
    """Build the environment `<backend>:<task>`; kwargs go to the backend (e.g. `SimConfig` fields)."""
    prefix, sep, task = name.partition(":")
    if not sep or prefix not in BACKENDS or task not in BACKENDS[prefix].tasks():
        raise ValueError(f"unknown environment {name!r}; known: {list(list_envs())}")
    return BACKENDS[prefix].make(task, **kwargs)

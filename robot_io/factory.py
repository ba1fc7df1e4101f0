"""`make_env("<backend>:<task>", **kwargs)`: one entry point for every robot environment.

Backends are registered in `BACKENDS` (prefix -> how to list its tasks and build an env):
  sim:<task>                   the MuJoCo simulator (`robot_io/sim`);
  franka:<task or task.toml>   a Franka behind the HIL-SERL/ConRFT HTTP server (`robot_io/franka`,
                               bundled task configs in `robot_io/tasks/`);
  gym:<adapter or adapter.toml>  any Gymnasium env with image + state observations (`gym_adapter.py`,
                               bundled adapters in `robot_io/gym_adapters/`, e.g. gym_hil_pick_cube).
Backends are imported lazily, so listing or building one never imports another's dependencies.
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
    any_task: str = ""  # non-empty: the task is free-form (this says what, e.g. a config path)


def sim_tasks() -> tuple[str, ...]:
    """Names of the simulated tasks (`sim:<task>`)."""
    from vlarft.robot_io.sim.tasks import TASKS

    return tuple(sorted(TASKS))


def _make_sim(task: str, **kwargs) -> gym.Env:
    from vlarft.robot_io.sim import SimRobotEnv

    return SimRobotEnv(task=task, **kwargs)


BACKENDS: dict[str, Backend] = {"sim": Backend(tasks=sim_tasks, make=_make_sim)}


def _make_gym(config_path: str, **overrides) -> gym.Env:
    from vlarft.robot_io.gym_adapter import GymAdapterEnv, load_gym_config

    return GymAdapterEnv(dataclasses.replace(load_gym_config(config_path), **overrides))


def gym_adapters() -> tuple[str, ...]:
    """Names of the bundled gym adapters (`gym:<name>`, files in robot_io/gym_adapters/)."""
    from vlarft.robot_io.gym_adapter import bundled_adapters

    return bundled_adapters()


# `gym:<bundled adapter>` or `gym:<path/to/adapter.toml>`: any Gymnasium env mapped onto the contract
# (robot_io/gym_adapter.py).
BACKENDS["gym"] = Backend(tasks=gym_adapters, make=_make_gym, any_task="path/to/adapter.toml")


def franka_tasks() -> tuple[str, ...]:
    """Names of the bundled real-robot tasks (`franka:<task>`, files in robot_io/tasks/)."""
    from vlarft.robot_io.task_config import bundled_tasks

    return bundled_tasks()


def _make_franka(task: str, **overrides) -> gym.Env:
    from vlarft.robot_io.franka.env import make_franka_env

    return make_franka_env(task, **overrides)


# `franka:<bundled task>` or `franka:<path/to/task.toml>`: the real arm over HTTP (robot_io/franka/);
# kwargs override TaskConfig fields (e.g. server_url=...).
BACKENDS["franka"] = Backend(tasks=franka_tasks, make=_make_franka, any_task="path/to/task.toml")


def list_envs() -> tuple[str, ...]:
    """Every name `make_env` accepts, e.g. `sim:pick_cube`."""
    return tuple(f"{prefix}:{task}" for prefix, backend in BACKENDS.items() for task in backend.tasks())


def make_env(name: str, **kwargs) -> gym.Env:
    """Build the environment `<backend>:<task>`; kwargs go to the backend (e.g. `SimConfig` fields)."""
    prefix, sep, task = name.partition(":")
    backend = BACKENDS.get(prefix) if sep else None
    if backend is None or not ((backend.any_task and task) or task in backend.tasks()):
        free = [f"{p}:<{b.any_task}>" for p, b in BACKENDS.items() if b.any_task]
        raise ValueError(f"unknown environment {name!r}; known: {list(list_envs()) + free}")
    return BACKENDS[prefix].make(task, **kwargs)

"""Any Gymnasium env with dict observations (images + state) and a Box action, through our contract.

`make_env("gym:path/to/adapter.toml")` builds `GymAdapterEnv(load_gym_config(path))`: the env's
images become `image_<camera>` (resized to `image_size`), its state keys become `state`, our
normalised action box [-1, 1]^7 is mapped onto its Box, and `info["success"]` comes from an info
key or a reward threshold. Recording, conversion and training then work on it unchanged.

Bundled adapters (`robot_io/gym_adapters/*.toml`) are named without the path: `gym:gym_hil_pick_cube`
is gym-hil's MuJoCo Franka pick task, the file below (gym-hil 0.1.14, in our dev extra; its key
layout differs between versions, check yours):

    env_id = "gym_hil:gym_hil/PandaPickCubeBase-v0"  # "module:id" imports the module (it registers)
    instruction = "pick up the cube"
    task = "hil_pick_cube"                            # default: derived from env_id
    robot = "gym_hil_panda"
    image_size = [128, 128]                           # (height, width) of every camera image
    control_hz = 10.0
    max_episode_steps = 100                           # 0 = the env's registered time limit
    success_key = "succeed"                           # key in info (nested keys as "a/b")
    # success_reward_threshold = 0.5                  # instead: success = reward > threshold
    action_index = [0, 1, 2, 3, 4, 5, 6]              # their action i = our action[action_index[i]]
    action_low = [-0.02, -0.02, -0.02, 0, 0, 0, -1]   # override their Box bounds (else the env's)
    action_high = [0.02, 0.02, 0.02, 0, 0, 0, 1]

    [make_kwargs]                                     # passed to gymnasium.make
    image_obs = true

    [images]                                          # our camera = their key ("a/b" = nested)
    front = "pixels/front"
    wrist = "pixels/wrist"

    [state]                                           # STATE_LAYOUT component = their key[index or slice]
    tcp_pos = "agent_pos[15:18]"                      # agent_pos = qpos(7) qvel(7) gripper(1) tcp(3)
    gripper = { key = "agent_pos[14]", scale = -0.003922, offset = 1.0 }  # 0..255 closing -> 1..0 opening

State: either `[state]` maps components of our 19-d `STATE_LAYOUT` (unmapped ones are 0; each
value is `key`, `key[i]` or `key[a:b]`, or a table with `key`, `scale`, `offset`: value * scale +
offset), or `state_keys = ["agent_pos", ...]` concatenates their arrays and keeps their own
state dimension (conversion and training accept any `state_dim`, but `tools/record_demos.py` reads
the gripper opening from the 19-d layout, so prefer `[state]` for recording).

Action: ours is always 7-d (dx dy dz drx dry drz gripper, so every teleop device works). Their
action i is `low[i] + (our[action_index[i]] + 1) / 2 * (high[i] - low[i])`; `action_index` is
required when their dimension is not 7 (e.g. [0, 1, 2, 6] for xyz + gripper), and our entries it
leaves out are ignored. Swapping a low/high pair flips that axis. Infinite bounds need overrides.

Success and reward: with `sparse_reward` (default) the reward is 1.0 on the success step, like the
simulator; success ends the episode with `terminated`. The success key must be in every step's info.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from vlarft.robot_io.cameras.processing import resize
from vlarft.robot_io.contract import (
    ACTION_DIM,
    INFO_SUCCESS,
    STATE_DIM,
    STATE_LAYOUT,
    RobotSpec,
    action_space,
    image_key,
    observation_space,
    state_slice,
)
from vlarft.robot_io.interrupts import interrupts_deferred


class GymAdapterError(ValueError):
    """A gym adapter config does not fit its file or its env; the message names the key."""


_SOURCE = re.compile(r"^(?P<key>[^\[\]]+?)(?:\[(?P<start>-?\d*)(?P<colon>:)?(?P<stop>-?\d*)\])?$")


@dataclasses.dataclass(frozen=True)
class StateSource:
    """Where one state piece comes from: `key` (`a/b` nested, optional `[i]` or `[a:b]` on the
    flattened array), multiplied by `scale` and shifted by `offset`."""

    key: str
    scale: float = 1.0
    offset: float = 0.0

    def __post_init__(self):
        if not isinstance(self.key, str) or not _SOURCE.match(self.key):
            raise GymAdapterError(f"state source {self.key!r} is not 'key', 'key[i]' or 'key[a:b]'")

    @property
    def path(self) -> str:
        return _SOURCE.match(self.key)["key"]

    def select(self, value: Any) -> np.ndarray:
        """The selected entries of `value` (flattened), scaled and offset, as float32[n]."""
        match = _SOURCE.match(self.key)
        flat = np.asarray(value, np.float64).reshape(-1)
        start, stop = match["start"], match["stop"]
        if match["colon"]:
            flat = flat[slice(int(start) if start else None, int(stop) if stop else None)]
        elif start:
            index = int(start)
            if not -len(flat) <= index < len(flat):
                raise GymAdapterError(f"state source {self.key!r}: index {index} is outside its {len(flat)} values")
            flat = flat[[index]]
        return (flat * self.scale + self.offset).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class GymAdapterConfig:
    """How one Gymnasium env maps onto the contract (see the module docstring for a TOML example).

    Attributes:
      env_id: gymnasium id; "module:id" imports `module` first (where the env is registered).
      instruction: the task's language instruction (stored with every episode).
      images: our camera name -> their observation key ("pixels/front" = nested).
      state: STATE_LAYOUT component -> `StateSource` (or its key string); unmapped components are 0.
      state_keys: instead of `state`: their keys concatenated in order (keeps their state dim).
      make_kwargs: keyword arguments of `gymnasium.make`.
      task: task name (episode file names, metadata); "" = derived from `env_id`.
      robot: robot name stored in episode metadata.
      image_size: (height, width) every camera image is resized to.
      action_index: their action i takes our action[action_index[i]]; () = identity (needs 7 dims).
      action_low / action_high: their action bounds; () = the env's Box bounds.
      success_key: info key of the success flag ("a/b" = nested).
      success_reward_threshold: when set, success is reward > threshold (success_key unused).
      sparse_reward: reward 1.0 on the success step, else 0.0; False keeps the env's reward.
      control_hz: control frequency of the env.
      max_episode_steps: time limit in steps; 0 = the env's registered limit.
    """

    env_id: str
    instruction: str
    images: Mapping[str, str]
    state: Mapping[str, StateSource] = dataclasses.field(default_factory=dict)
    state_keys: tuple[str, ...] = ()
    make_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    task: str = ""
    robot: str = "gym"
    image_size: tuple[int, int] = (128, 128)
    action_index: tuple[int, ...] = ()
    action_low: tuple[float, ...] = ()
    action_high: tuple[float, ...] = ()
    success_key: str = "is_success"
    success_reward_threshold: float | None = None
    sparse_reward: bool = True
    control_hz: float = 10.0
    max_episode_steps: int = 0

    def __post_init__(self):
        for name in ("env_id", "instruction", "task", "robot", "success_key"):
            if not isinstance(getattr(self, name), str):
                raise GymAdapterError(f"key {name!r} must be a string, got {getattr(self, name)!r}")
        for name in ("env_id", "instruction"):
            if not getattr(self, name):
                raise GymAdapterError(f"key {name!r} must not be empty")
        if not isinstance(self.images, Mapping) or not self.images:
            raise GymAdapterError("key 'images' must map at least one camera name to an observation key")
        for camera, key in self.images.items():
            if not re.fullmatch(r"[A-Za-z0-9_]+", camera) or not isinstance(key, str) or not key:
                raise GymAdapterError(f"key 'images.{camera}': camera names are letters, digits or '_' "
                                      f"and values are observation keys, got {key!r}")
        self._set("images", dict(self.images))
        self._set("make_kwargs", dict(self.make_kwargs))
        self._set("state", {name: self._state_source(name, value) for name, value in dict(self.state).items()})
        self._set("state_keys", tuple(StateSource(k).key for k in self._sequence("state_keys", str)))
        if bool(self.state) == bool(self.state_keys):
            raise GymAdapterError("set exactly one of 'state' (STATE_LAYOUT components) and 'state_keys'")
        self._set("image_size", self._sequence("image_size", int))
        if len(self.image_size) != 2 or min(self.image_size) < 1:
            raise GymAdapterError(f"key 'image_size' must be [height, width] > 0, got {list(self.image_size)}")
        self._set("action_index", self._sequence("action_index", int))
        if any(not 0 <= i < ACTION_DIM for i in self.action_index):
            raise GymAdapterError(f"key 'action_index' entries must be in 0..{ACTION_DIM - 1}, "
                                  f"got {list(self.action_index)}")
        self._set("action_low", self._sequence("action_low", float))
        self._set("action_high", self._sequence("action_high", float))
        if len(self.action_low) != len(self.action_high):
            raise GymAdapterError("keys 'action_low' and 'action_high' must be given together, same length")
        if self.success_reward_threshold is None and not self.success_key:
            raise GymAdapterError("set 'success_key' or 'success_reward_threshold'")
        threshold = self.success_reward_threshold
        if threshold is not None:
            if isinstance(threshold, (bool, str)):
                raise GymAdapterError(f"key 'success_reward_threshold' must be a number, got {threshold!r}")
            self._set("success_reward_threshold", float(threshold))
        if not isinstance(self.sparse_reward, bool):
            raise GymAdapterError(f"key 'sparse_reward' must be true or false, got {self.sparse_reward!r}")
        if not self.control_hz > 0 or int(self.max_episode_steps) < 0:
            raise GymAdapterError("key 'control_hz' must be > 0 and 'max_episode_steps' >= 0")
        if not self.task:
            self._set("task", re.sub(r"[^A-Za-z0-9_]+", "_", self.env_id.split(":")[-1].split("/")[-1]).strip("_"))

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)

    def _sequence(self, name: str, kind: type) -> tuple:
        value = getattr(self, name)
        try:
            if isinstance(value, str):
                raise TypeError
            return tuple(kind(v) for v in value)
        except (TypeError, ValueError):
            raise GymAdapterError(f"key {name!r} must be a list of {kind.__name__}, got {value!r}") from None

    @staticmethod
    def _state_source(name: str, value: Any) -> StateSource:
        known = [k for k, _ in STATE_LAYOUT]
        if name not in known:
            raise GymAdapterError(f"key 'state.{name}' is not a STATE_LAYOUT component; known: {known}")
        if isinstance(value, StateSource):
            return value
        try:
            return StateSource(value) if isinstance(value, str) else StateSource(**dict(value))
        except (TypeError, ValueError) as err:
            raise GymAdapterError(f"key 'state.{name}': expected 'key[...]' or {{key, scale, offset}}, "
                                  f"got {value!r} ({err})") from None


ADAPTERS_DIR = Path(__file__).parent / "gym_adapters"


def bundled_adapters() -> tuple[str, ...]:
    """Names of the adapter configs shipped in `robot_io/gym_adapters/` (`gym:<name>`)."""
    return tuple(sorted(p.stem for p in ADAPTERS_DIR.glob("*.toml")))


def load_gym_config(path: str | Path) -> GymAdapterConfig:
    """Reads a `GymAdapterConfig` from a TOML file or a bundled adapter's name; GymAdapterError
    names the file and the key."""
    path = ADAPTERS_DIR / f"{path}.toml" if str(path) in bundled_adapters() else Path(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise GymAdapterError(f"{path}: no such gym adapter config file") from None
    except tomllib.TOMLDecodeError as err:
        raise GymAdapterError(f"{path}: not valid TOML: {err}") from None
    fields = {f.name: f for f in dataclasses.fields(GymAdapterConfig)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise GymAdapterError(f"{path}: unknown key {unknown[0]!r}; known: {sorted(fields)}")
    missing = [n for n, f in fields.items() if f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING and n not in data]
    if missing:
        raise GymAdapterError(f"{path}: missing key {missing[0]!r}")
    try:
        return GymAdapterConfig(**data)
    except GymAdapterError as err:
        raise GymAdapterError(f"{path}: {err}") from None


def lookup(tree: Mapping, path: str, what: str) -> Any:
    """`tree["a"]["b"]` for path "a/b"; GymAdapterError naming the key and the available ones."""
    node: Any = tree
    for part in path.split("/"):
        if not isinstance(node, Mapping) or part not in node.keys():  # (a gym Dict's `in` tests samples)
            raise GymAdapterError(f"{what} has no key {path!r}; available: {flat_keys(tree)}")
        node = node[part]
    return node


def flat_keys(tree: Mapping, prefix: str = "") -> list[str]:
    """Every leaf key of a nested mapping (or gymnasium Dict space) as "a/b"."""
    keys = []
    for key, value in tree.items():
        path = f"{prefix}{key}"
        keys.extend(flat_keys(value, path + "/") if isinstance(value, Mapping) else [path])
    return keys


class GymAdapterEnv(gym.Env):
    """`config.env_id` (or the given `env`) behind the environment contract; `env` is the inner env."""

    def __init__(self, config: GymAdapterConfig, env: gym.Env | None = None):
        self.config = config
        if env is None:
            kwargs = dict(config.make_kwargs)
            if config.max_episode_steps:
                kwargs["max_episode_steps"] = config.max_episode_steps
            try:
                env = gym.make(config.env_id, **kwargs)
            except (gym.error.Error, ImportError) as err:
                raise GymAdapterError(f"cannot make gymnasium env {config.env_id!r}: {err}") from err
        elif config.max_episode_steps:
            env = gym.wrappers.TimeLimit(env, config.max_episode_steps)
        self.env = env
        try:
            self._check_spaces()
            limit = config.max_episode_steps or (env.spec.max_episode_steps if env.spec else None)
            if not limit:
                raise GymAdapterError(f"{config.env_id!r} has no time limit: set 'max_episode_steps'")
        except BaseException:
            env.close()
            raise
        self.robot_spec = RobotSpec(
            robot=config.robot, task=config.task, instruction=config.instruction,
            cameras={camera: config.image_size for camera in config.images},
            state_dim=self._state_dim, action_dim=ACTION_DIM, control_hz=config.control_hz,
            max_episode_steps=int(limit))
        self.observation_space = observation_space(self.robot_spec)
        self.action_space = action_space(self.robot_spec)
        self.metadata = dict(getattr(env, "metadata", {}))
        self.render_mode = env.render_mode

    def _check_spaces(self) -> None:
        """Checks the mapped keys and the action Box against the env's spaces, naming what is wrong."""
        config, name, spaces = self.config, f"env {self.config.env_id!r}", self.env.observation_space
        if not isinstance(spaces, gym.spaces.Dict):
            raise GymAdapterError(f"{name}: the adapter needs a dict observation space, got {spaces}")
        for camera, key in config.images.items():
            space = lookup(spaces, key, f"{name} observation space (images.{camera})")
            if not (isinstance(space, gym.spaces.Box) and len(space.shape) == 3 and space.shape[-1] == 3
                    and space.dtype == np.uint8):
                raise GymAdapterError(f"{name}: images.{camera} = {key!r} is {space}, not a uint8 HxWx3 image")
        self._state_sources = list(config.state.items()) if config.state else [
            (f"state_keys[{i}]", StateSource(key)) for i, key in enumerate(config.state_keys)]
        sizes = []
        for component, source in self._state_sources:
            space = lookup(spaces, source.path, f"{name} observation space (state {component})")
            if not isinstance(space, gym.spaces.Box):
                raise GymAdapterError(f"{name}: state {component} = {source.key!r} is {space}, not a Box")
            sizes.append(len(source.select(np.zeros(space.shape))))
            if config.state:
                want = state_slice(component).stop - state_slice(component).start
                if sizes[-1] != want:
                    raise GymAdapterError(f"{name}: state {component} = {source.key!r} selects {sizes[-1]} "
                                          f"value(s), STATE_LAYOUT {component!r} has {want}")
        self._state_dim = STATE_DIM if config.state else sum(sizes)
        self._check_action_space(name)

    def _check_action_space(self, name: str) -> None:
        space, config = self.env.action_space, self.config
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
            raise GymAdapterError(f"{name}: the adapter needs a 1-D Box action space, got {space}")
        dim = space.shape[0]
        self._index = np.asarray(config.action_index or range(ACTION_DIM))
        if len(self._index) != dim:
            raise GymAdapterError(f"{name}: its action has {dim} dimension(s); 'action_index' must give "
                                  f"{dim} indices into our {ACTION_DIM}-d action, got {list(config.action_index)}")
        self._low = np.asarray(config.action_low or space.low, np.float64)
        self._high = np.asarray(config.action_high or space.high, np.float64)
        if self._low.shape != (dim,):
            raise GymAdapterError(f"{name}: 'action_low'/'action_high' need {dim} values, got {len(self._low)}")
        if not (np.isfinite(self._low).all() and np.isfinite(self._high).all()):
            raise GymAdapterError(f"{name}: action bounds {space.low}..{space.high} are not finite; "
                                  f"set 'action_low' and 'action_high'")

    def to_env_action(self, action: Any) -> np.ndarray:
        """Our action in [-1, 1]^7 (clipped) as the inner env's action (affine per dimension)."""
        ours = np.asarray(action, np.float64)
        if ours.shape != (ACTION_DIM,):
            raise ValueError(f"action must have shape ({ACTION_DIM},), got {ours.shape}")
        unit = (np.clip(ours, -1.0, 1.0)[self._index] + 1.0) / 2.0
        return (self._low + unit * (self._high - self._low)).astype(self.env.action_space.dtype)

    def to_observation(self, raw: Mapping) -> dict[str, np.ndarray]:
        """The inner env's observation as a contract observation."""
        if not isinstance(raw, Mapping):
            raise GymAdapterError(f"env {self.config.env_id!r} returned a {type(raw).__name__} observation, not a dict")
        what = f"env {self.config.env_id!r} observation"
        obs = {}
        for camera, key in self.config.images.items():
            image = np.asarray(lookup(raw, key, what))
            if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
                raise GymAdapterError(f"{what}: images.{camera} = {key!r} is {image.dtype}{list(image.shape)}, "
                                      f"not a uint8 HxWx3 image")
            obs[image_key(camera)] = resize(image, self.config.image_size)
        values = [source.select(lookup(raw, source.path, what)) for _, source in self._state_sources]
        if self.config.state:
            state = np.zeros(STATE_DIM, np.float32)
            for (component, _), value in zip(self._state_sources, values):
                state[state_slice(component)] = value
        else:
            state = np.concatenate(values)
        obs["state"] = state
        return obs

    def _success(self, reward: float, info: Mapping) -> bool:
        if self.config.success_reward_threshold is not None:
            return float(reward) > self.config.success_reward_threshold
        return bool(lookup(info, self.config.success_key, f"env {self.config.env_id!r} step info"))

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        with interrupts_deferred(python_handlers_only=True):  # the env may render through ctypes (MuJoCo's EGL)
            raw, info = self.env.reset(seed=seed, options=options)
        return self.to_observation(raw), {**info, INFO_SUCCESS: False}

    def step(self, action):
        env_action = self.to_env_action(action)
        with interrupts_deferred(python_handlers_only=True):
            raw, reward, terminated, truncated, info = self.env.step(env_action)
        success = self._success(reward, info)
        terminated = bool(terminated or success)
        reward = float(success) if self.config.sparse_reward else float(reward)
        return (self.to_observation(raw), reward, terminated, bool(truncated) and not terminated,
                {**info, INFO_SUCCESS: success})

    def render(self):
        return self.env.render()

    def close(self) -> None:
        self.env.close()

"""`RldsMapping`: a declarative map from any TFDS/RLDS dataset's features to our schema, from TOML.

    mapping = load_mapping("bridge")                        # bundled: datasets/mappings/bridge.toml
    mapping = load_mapping("/lab/mappings/my_robot.toml")

A mapping says which step image keys become which cameras (crop, then resize), which numeric keys
are concatenated into `observation/state` and `action` (slices, scaling, absolute -> delta), how
the gripper value maps to ours (-1 open, +1 closed), where the instruction and its embedding come
from, and how success, rewards and terminals are derived. File layout (every table but
`[cameras.*]`, `[[state]]` and `[[action.parts]]` is optional):

    [episode]
    id = "index"                   # "index" -> "<split>-<index:06d>", or "metadata:KEY"
    task = "text:pick_place"       # "text:...", "metadata:KEY"; default: the source dataset's name
    robot = "text:widowx"          # "text:...", "metadata:KEY"; default ""
    source = "demo"                # our episode source (demo/online/intervention/eval)
    success = "always"             # "always", "never", "step:KEY" (any step non-zero), "metadata:KEY"

    [language]
    instruction = "step:language_instruction"   # "step:KEY", "metadata:KEY" or "text:..."
    fallback = ""                  # used when the instruction is empty ("" = such episodes fail)
    embedding = "step:language_embedding"       # optional "step:KEY" / "metadata:KEY" float vector

    [cameras.front]                # our camera name -> observation/image_front
    key = "observation/image"      # source step field (nested keys joined with "/")
    size = [128, 128]              # output height, width (area resampling)
    crop = [0, 0, 480, 480]        # optional: top, left, height, width, before resizing

    [[state]]                      # concatenated in order
    key = "observation/state"
    slice = [0, 6]                 # optional [start, stop) of the last axis, or index = N
    names = ["x", "y", "z", "roll", "pitch", "yaw"]   # optional, one per dimension
    scale = 1.0                    # optional: value -> (value - offset) * scale (scalar or per dim)
    offset = 0.0

    [action]
    clip = false                   # clip to [-1, 1]; else an action outside is an error

    [[action.parts]]               # same fields as [[state]], plus:
    key = "action"
    slice = [0, 6]
    delta = false                  # the values are absolute: a_t = x_{t+1} - x_t (then scaled)
    wrap_angle = false             # wrap such differences to [-pi, pi)

    [action.gripper]               # appended last
    key = "action"
    index = 6
    open = 1.0                     # source value meaning open (-> -1)
    closed = 0.0                   # source value meaning closed (-> +1)
    binarize = false               # snap to -1/+1

    [reward]
    reward = "derive"              # "derive": 1 on the last transition of a successful episode;
                                   # "step:KEY": the source rewards (see map_episode)
    terminal = "success"           # "success" or "step:KEY" (any step non-zero)

Unknown keys are refused (with the likely spelling); every error names the file and the field.
Which keys exist and their shapes is checked against a dataset in `mapped_episodes.resolve`.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
from pathlib import Path
from typing import Any, Mapping

from vlarft.datasets.schema import SOURCES

MAPPINGS_DIR = Path(__file__).parent / "mappings"
SUCCESS_WORDS = ("always", "never")


class MappingConfigError(ValueError):
    """A mapping file is malformed; the message names the file and the field."""


@dataclasses.dataclass(frozen=True)
class FieldPart:
    """A slice of one numeric source step field, transformed to `(value - offset) * scale`.

    Attributes:
      key: source step field path, nested keys joined with "/" (e.g. "observation/state").
      start / stop: slice of the field's last axis (None = from the start / to the end); a
        scalar field counts as one value.
      names: one name per output dimension (default `<key>[i]`).
      scale / offset: a scalar or one value per output dimension.
      delta: the values are absolute; part_t = x_{t+1} - x_t (the last step's is 0, padding).
      wrap_angle: wrap those differences to [-pi, pi) (angles).
    """

    key: str
    start: int | None = None
    stop: int | None = None
    names: tuple[str, ...] = ()
    scale: float | tuple[float, ...] = 1.0
    offset: float | tuple[float, ...] = 0.0
    delta: bool = False
    wrap_angle: bool = False


@dataclasses.dataclass(frozen=True)
class GripperMapping:
    """The source gripper value `x` becomes ours: open -> -1, closed -> +1, linear in between.

    Attributes:
      key: source step field; index: position in its last axis (None for a scalar field).
      open / closed: the source values meaning fully open / fully closed (must differ).
      binarize: snap the result to -1 / +1 (0 counts as open).
    """

    key: str
    index: int | None = None
    open: float = 1.0
    closed: float = 0.0
    binarize: bool = False


@dataclasses.dataclass(frozen=True)
class CameraMapping:
    """One source image field -> our camera `name` (observation/image_<name>).

    Attributes:
      crop: (top, left, height, width) taken before resizing; None = the whole frame.
      size: (height, width) of our frames; area resampling when it differs from the crop.
    """

    name: str
    key: str
    size: tuple[int, int]
    crop: tuple[int, int, int, int] | None = None


@dataclasses.dataclass(frozen=True)
class LanguageMapping:
    """[language]: `instruction` ("step:KEY", "metadata:KEY" or "text:..."), the `fallback` text for
    an empty one ("" = such an episode fails), an optional `embedding` ("step:KEY"/"metadata:KEY")."""

    instruction: str = "step:language_instruction"
    fallback: str = ""
    embedding: str = ""


@dataclasses.dataclass(frozen=True)
class EpisodeRules:
    """[episode]: `id` ("index" or "metadata:KEY"), `task` and `robot` ("text:..."/"metadata:KEY"),
    our `source`, and `success` ("always", "never", "step:KEY", "metadata:KEY")."""

    id: str = "index"
    task: str = ""
    robot: str = ""
    source: str = "demo"
    success: str = "always"


@dataclasses.dataclass(frozen=True)
class RewardRules:
    """[reward]: `reward` ("derive" or "step:KEY") and `terminal` ("success" or "step:KEY")."""

    reward: str = "derive"
    terminal: str = "success"


@dataclasses.dataclass(frozen=True)
class RldsMapping:
    """A whole mapping (see the module docstring for the TOML layout and defaults).

    Attributes:
      name: the mapping's name (file stem).
      cameras / state / action / gripper: the field maps above; gripper may be None.
      clip_action: clip actions to [-1, 1] (False: an action outside is an error).
      language / episode / rewards: the [language], [episode] and [reward] tables.
      path: the TOML file it was read from ("" when built from text).
      text: the TOML text itself (stored beside a converted dataset).
    """

    name: str
    cameras: tuple[CameraMapping, ...]
    state: tuple[FieldPart, ...]
    action: tuple[FieldPart, ...]
    gripper: GripperMapping | None = None
    clip_action: bool = False
    language: LanguageMapping = LanguageMapping()
    episode: EpisodeRules = EpisodeRules()
    rewards: RewardRules = RewardRules()
    path: str = ""
    text: str = ""


_TABLES = {
    "": {"episode", "language", "cameras", "state", "action", "reward"},
    "episode": {"id", "task", "robot", "source", "success"},
    "language": {"instruction", "fallback", "embedding"},
    "camera": {"key", "size", "crop"},
    "part": {"key", "slice", "index", "names", "scale", "offset", "delta", "wrap_angle"},
    "action": {"clip", "parts", "gripper"},
    "gripper": {"key", "index", "open", "closed", "binarize"},
    "reward": {"reward", "terminal"},
}


def bundled_mappings() -> list[str]:
    """Names of the mappings shipped in datasets/mappings/."""
    return sorted(p.stem for p in MAPPINGS_DIR.glob("*.toml"))


def load_mapping(name_or_path: str | Path) -> RldsMapping:
    """A bundled mapping by name, or a TOML file by path."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = MAPPINGS_DIR / f"{name_or_path}.toml"
        if not path.exists():
            raise MappingConfigError(f"no mapping file {str(name_or_path)!r} and no bundled mapping of that name "
                                     f"(bundled: {', '.join(bundled_mappings())})")
    try:
        text = path.read_text()
    except OSError as e:
        raise MappingConfigError(f"{path}: cannot read the mapping: {e.strerror or e}") from None
    return parse_mapping(text, name=path.stem, path=str(path))


def parse_mapping(text: str, *, name: str = "mapping", path: str = "") -> RldsMapping:
    """Parses and checks a mapping's TOML text (errors name `path` and the field)."""
    where = path or name
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise MappingConfigError(f"{where}: not valid TOML: {e}") from None
    fail = lambda field, reason: MappingConfigError(f"{where}: {field}: {reason}")
    _refuse_unknown(table, "", "", fail)
    episode = _table(table, "episode", fail)
    language = _table(table, "language", fail)
    action = _table(table, "action", fail)
    reward = _table(table, "reward", fail)
    cameras_table = _table(table, "cameras", fail)
    if not cameras_table:
        raise fail("cameras", "at least one [cameras.<name>] table is needed")
    cameras = tuple(_camera(name, value, fail) for name, value in cameras_table.items())
    state = _parts(table.get("state"), "state", fail)
    parts = _parts(action.get("parts"), "action.parts", fail, allow_delta=True, required=False)
    gripper = _gripper(action["gripper"], fail) if "gripper" in action else None
    if not parts and gripper is None:
        raise fail("action", "needs [[action.parts]] and/or [action.gripper]")
    mapping = RldsMapping(
        name=name, cameras=cameras, state=state, action=parts, gripper=gripper,
        clip_action=_typed(action, "clip", bool, False, "action", fail),
        language=LanguageMapping(
            instruction=_reference(language, "instruction", "step:language_instruction", ("step", "metadata", "text"),
                                   "language", fail),
            fallback=_typed(language, "fallback", str, "", "language", fail),
            embedding=_reference(language, "embedding", "", ("step", "metadata"), "language", fail)),
        episode=EpisodeRules(
            id=_reference(episode, "id", "index", ("metadata",), "episode", fail, words=("index",)),
            task=_reference(episode, "task", "", ("text", "metadata"), "episode", fail),
            robot=_reference(episode, "robot", "", ("text", "metadata"), "episode", fail),
            source=_typed(episode, "source", str, "demo", "episode", fail),
            success=_reference(episode, "success", "always", ("step", "metadata"), "episode", fail,
                               words=SUCCESS_WORDS)),
        rewards=RewardRules(
            reward=_reference(reward, "reward", "derive", ("step",), "reward", fail, words=("derive",)),
            terminal=_reference(reward, "terminal", "success", ("step",), "reward", fail, words=("success",))),
        path=path, text=text)
    if mapping.episode.source not in SOURCES:
        raise fail("episode.source", f"{mapping.episode.source!r} is not one of {SOURCES}")
    return mapping


def reference(value: str) -> tuple[str, str]:
    """"step:observation/state" -> ("step", "observation/state"); a plain word -> (word, "")."""
    kind, _, rest = value.partition(":")
    return kind, rest


def _refuse_unknown(table: Mapping, kind: str, field: str, fail) -> None:
    allowed = _TABLES[kind]
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(sorted(allowed))})"
            raise fail(f"{field}.{key}" if field else key, f"unknown key{hint}")


def _table(table: Mapping, key: str, fail) -> dict:
    value = table.get(key, {})
    if not isinstance(value, dict):
        raise fail(key, f"expected a table, got {type(value).__name__}")
    if key in _TABLES:
        _refuse_unknown(value, key, key, fail)
    return value


def _typed(table: Mapping, key: str, kind: type, default, where: str, fail):
    value = table.get(key, default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise fail(f"{where}.{key}", f"expected {kind.__name__}, got {value!r}")
    return value


def _reference(table: Mapping, key: str, default: str, kinds: tuple[str, ...], where: str, fail,
               words: tuple[str, ...] = ()) -> str:
    value = _typed(table, key, str, default, where, fail)
    if value == "" or value in words:
        return value
    kind, rest = reference(value)
    if kind not in kinds or not rest:
        allowed = [*(f'"{w}"' for w in words), *(f'"{k}:..."' for k in kinds)]
        raise fail(f"{where}.{key}", f"{value!r}: expected one of {', '.join(allowed)}")
    return value


def _camera(name: str, value: Any, fail) -> CameraMapping:
    field = f"cameras.{name}"
    if not isinstance(value, dict):
        raise fail(field, "expected a table with key and size")
    _refuse_unknown(value, "camera", field, fail)
    if not name.isidentifier():
        raise fail(field, "a camera name must be an identifier (letters, digits, _)")
    key = _typed(value, "key", str, "", field, fail)
    if not key:
        raise fail(f"{field}.key", "missing: the source image field")
    size = _int_list(value.get("size"), 2, f"{field}.size", fail, minimum=1)
    crop = _int_list(value["crop"], 4, f"{field}.crop", fail) if "crop" in value else None
    if crop is not None and (crop[0] < 0 or crop[1] < 0 or crop[2] < 1 or crop[3] < 1):
        raise fail(f"{field}.crop", f"{list(crop)}: top and left must be >= 0, height and width >= 1")
    return CameraMapping(name=name, key=key, size=tuple(size), crop=crop)


def _int_list(value, length: int, field: str, fail, minimum: int | None = None) -> tuple[int, ...]:
    if (not isinstance(value, list) or len(value) != length
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        raise fail(field, f"expected {length} integers, got {value!r}")
    if minimum is not None and min(value) < minimum:
        raise fail(field, f"{value}: every value must be >= {minimum}")
    return tuple(value)


def _parts(value, field: str, fail, *, allow_delta: bool = False, required: bool = True) -> tuple[FieldPart, ...]:
    if value is None:
        if required:
            raise fail(field, f"at least one [[{field}]] table is needed")
        return ()
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise fail(field, f"expected [[{field}]] tables")
    return tuple(_part(v, f"{field}[{i}]", fail, allow_delta) for i, v in enumerate(value))


def _part(value: dict, field: str, fail, allow_delta: bool) -> FieldPart:
    _refuse_unknown(value, "part", field, fail)
    key = _typed(value, "key", str, "", field, fail)
    if not key:
        raise fail(f"{field}.key", "missing: the source step field")
    if "slice" in value and "index" in value:
        raise fail(field, "give slice or index, not both")
    start = stop = None
    if "slice" in value:
        start, stop = _int_list(value["slice"], 2, f"{field}.slice", fail, minimum=0)
        if stop <= start:
            raise fail(f"{field}.slice", f"[{start}, {stop}] is empty")
    elif "index" in value:
        start = _typed(value, "index", int, 0, field, fail)
        if start < 0:
            raise fail(f"{field}.index", f"{start}: must be >= 0")
        stop = start + 1
    names = value.get("names", [])
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise fail(f"{field}.names", f"expected a list of non-empty strings, got {names!r}")
    for flag in ("delta", "wrap_angle"):
        if flag in value and not allow_delta:
            raise fail(f"{field}.{flag}", "only action parts can be absolute -> delta")
    return FieldPart(key=key, start=start, stop=stop, names=tuple(names),
                     scale=_scalar_or_list(value, "scale", 1.0, field, fail),
                     offset=_scalar_or_list(value, "offset", 0.0, field, fail),
                     delta=_typed(value, "delta", bool, False, field, fail),
                     wrap_angle=_typed(value, "wrap_angle", bool, False, field, fail))


def _scalar_or_list(table: dict, key: str, default: float, field: str, fail) -> float | tuple[float, ...]:
    value = table.get(key, default)
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
    if number(value):
        return float(value)
    if isinstance(value, list) and value and all(number(v) for v in value):
        return tuple(float(v) for v in value)
    raise fail(f"{field}.{key}", f"expected a number or a list of numbers, got {value!r}")


def _gripper(value, fail) -> GripperMapping:
    field = "action.gripper"
    if not isinstance(value, dict):
        raise fail(field, "expected a table")
    _refuse_unknown(value, "gripper", field, fail)
    key = _typed(value, "key", str, "", field, fail)
    if not key:
        raise fail(f"{field}.key", "missing: the source step field")
    index = _typed(value, "index", int, 0, field, fail) if "index" in value else None
    if index is not None and index < 0:
        raise fail(f"{field}.index", f"{index}: must be >= 0")
    gripper = GripperMapping(key=key, index=index, open=_typed(value, "open", float, 1.0, field, fail),
                             closed=_typed(value, "closed", float, 0.0, field, fail),
                             binarize=_typed(value, "binarize", bool, False, field, fail))
    if gripper.open == gripper.closed:
        raise fail(field, f"open and closed are both {gripper.open}: they must differ")
    return gripper

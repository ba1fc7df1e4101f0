"""Any TFDS/RLDS dataset read through an `RldsMapping` (datasets/rlds_mapping.py) as our episodes.

    source = open_source("/data/bridge/0.1.0")
    resolved = resolve(load_mapping("bridge"), source)         # checks keys and shapes, gives the spec
    for episode in iterate_mapped_episodes(source, resolved, "train"):
        ...                                                       # validated episodes in our schema

`map_episode` maps one source episode (a `SourceEpisode`, read by datasets/rlds_source.py); the
Beam job (pipelines/map_rlds.py) and any loading code use that same function. Every error is a
`MappingError` naming the dataset, the episode and the field.

Alignment with our schema: step t keeps o_t and a_t; the source's last step becomes our final
observation, so its action is replaced by the zero padding (RLDS datasets built from demos often
hold a real action there; it has no next observation to pair with). With `reward = "step:KEY"`
our r_t is the source's for t < T-1, plus the source's last-step reward added to the last
transition (builders such as rlds_dataset_builder put a demo's success reward on its last step).
With `reward = "derive"`, r = 1 on the last transition of a successful episode, else 0. The
terminal flag (last step only) follows `terminal`; `discount` is 0 on the transition into it.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from typing import Iterator

import numpy as np

from vlarft.datasets.rlds_mapping import FieldPart, RldsMapping, reference
from vlarft.datasets.rlds_source import (MappingError, SourceDataset, SourceEpisode, open_source,
                                         read_source_episodes)
from vlarft.datasets.schema import Episode, EpisodeSpec, SchemaError, validate_episode


@dataclasses.dataclass(frozen=True)
class ResolvedMapping:
    """A mapping checked against one source dataset: the spec it produces and dimension names."""

    mapping: RldsMapping
    spec: EpisodeSpec
    state_names: tuple[str, ...]
    action_names: tuple[str, ...]

    @property
    def image_fields(self) -> tuple[str, ...]:
        """The source image fields the mapping reads (the only ones worth decoding)."""
        return tuple(camera.key for camera in self.mapping.cameras)

    def names_json(self) -> dict:
        return {"mapping": self.mapping.name, "mapping_file": self.mapping.path, "mapping_toml": self.mapping.text,
                "state_names": list(self.state_names), "action_names": list(self.action_names)}


def resolve(mapping: RldsMapping, source: SourceDataset) -> ResolvedMapping:
    """Checks every key the mapping names against the source's features; the spec of the output."""
    fail = lambda field, reason: MappingError(f"{reason} (mapping {mapping.path or mapping.name})",
                                              dataset=source.path, field=field)
    cameras = {}
    for camera in mapping.cameras:
        shape, dtype = _step_field(source, camera.key, fail, f"cameras.{camera.name}.key")
        if len(shape) != 3 or shape[-1] != 3 or dtype != "uint8":
            raise fail(f"steps/{camera.key}", f"cameras.{camera.name}: expected an RGB image uint8[H, W, 3], "
                                              f"the source has {dtype}{list(shape)}")
        if camera.crop is not None and None not in shape[:2]:
            top, left, height, width = camera.crop
            if top + height > shape[0] or left + width > shape[1]:
                raise fail(f"steps/{camera.key}", f"cameras.{camera.name}.crop {list(camera.crop)} leaves the "
                                                  f"{shape[0]}x{shape[1]} frame")
        cameras[camera.name] = camera.size
    state_names = _resolve_parts(mapping.state, source, fail, "state")
    action_names = _resolve_parts(mapping.action, source, fail, "action.parts")
    if mapping.gripper is not None:
        gripper = mapping.gripper
        width = _width(source, gripper.key, fail, "action.gripper.key")
        if (gripper.index is None) != (width is None) or (gripper.index is not None and width != VARIABLE
                                                         and gripper.index >= width):
            kind = "scalar" if width is None else "vector" if width == VARIABLE else f"{width} values"
            raise fail(f"steps/{gripper.key}", f"action.gripper.index {gripper.index} does not fit the source's "
                                               f"{kind}")
        action_names += ("gripper",)
    language_dim = 0
    if mapping.language.embedding:
        shape, _ = _referenced(source, mapping.language.embedding, fail, "language.embedding")
        if len(shape) != 1 or shape[0] is None:
            raise fail(mapping.language.embedding, f"language.embedding: expected a vector, the source has shape "
                                                   f"{list(shape)}")
        language_dim = shape[0]
    for field, value in (("language.instruction", mapping.language.instruction), ("episode.id", mapping.episode.id),
                         ("episode.task", mapping.episode.task), ("episode.robot", mapping.episode.robot),
                         ("episode.success", mapping.episode.success), ("reward.reward", mapping.rewards.reward),
                         ("reward.terminal", mapping.rewards.terminal)):
        if reference(value)[0] in ("step", "metadata"):
            _referenced(source, value, fail, field)
    spec = EpisodeSpec(cameras=cameras, state_dim=len(state_names), action_dim=len(action_names),
                       language_embedding_dim=language_dim)
    return ResolvedMapping(mapping=mapping, spec=spec, state_names=state_names, action_names=action_names)


def _step_field(source: SourceDataset, key: str, fail, mapping_field: str) -> tuple[tuple, str]:
    if key not in source.steps:
        close = difflib.get_close_matches(key, sorted(source.steps), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise fail(f"steps/{key}", f"{mapping_field} names a step field the dataset does not have ({hint}"
                                   f"step fields: {', '.join(sorted(source.steps))})")
    return source.steps[key]


def _referenced(source: SourceDataset, value: str, fail, mapping_field: str) -> tuple[tuple, str]:
    kind, key = reference(value)
    if kind == "step":
        return _step_field(source, key, fail, mapping_field)
    if key not in source.metadata:
        raise fail(f"episode_metadata/{key}", f"{mapping_field} names a metadata field the dataset does not have "
                                              f"(metadata fields: {', '.join(sorted(source.metadata)) or 'none'})")
    return source.metadata[key]


VARIABLE = -1  # a vector whose length the source's features leave open (shape [None])


def _width(source: SourceDataset, key: str, fail, mapping_field: str) -> int | None:
    """Values per step of a numeric field: None for a scalar, VARIABLE, or the length of its vector."""
    shape, dtype = _step_field(source, key, fail, mapping_field)
    if dtype in ("string", "object") or len(shape) > 1:
        raise fail(f"steps/{key}", f"{mapping_field}: expected a number or a vector per step, "
                                   f"the source has {dtype}{list(shape)}")
    if not shape:
        return None
    return VARIABLE if shape[0] is None else shape[0]


def _resolve_parts(parts: tuple[FieldPart, ...], source: SourceDataset, fail, where: str) -> tuple[str, ...]:
    names: list[str] = []
    for i, part in enumerate(parts):
        field = f"{where}[{i}]"
        width = _width(source, part.key, fail, f"{field}.key")
        scalar = width is None
        if width == VARIABLE:  # checked per episode instead
            if part.stop is None:
                raise fail(f"steps/{part.key}", f"{field}: the source's field has no fixed length; give "
                                                f"slice = [start, stop] (each episode is checked against it)")
            width = part.stop
        width = width or 1
        start, stop = part.start or 0, width if part.stop is None else part.stop
        if stop > width:
            raise fail(f"steps/{part.key}", f"{field}: slice [{start}, {stop}) does not fit the source's "
                                            f"{width} value(s)")
        count = stop - start
        for attr in ("names", "scale", "offset"):
            value = getattr(part, attr)
            if isinstance(value, tuple) and value and len(value) != count:
                raise fail(f"steps/{part.key}", f"{field}.{attr} has {len(value)} entries for {count} dimension(s)")
        names += part.names or ([part.key] if scalar else [f"{part.key}[{j}]" for j in range(start, stop)])
    return tuple(names)


def map_episode(episode: SourceEpisode, resolved: ResolvedMapping) -> Episode:
    """One source episode -> our validated episode (MappingError names dataset, episode, field)."""
    mapping = resolved.mapping
    eid = _episode_id(episode, mapping)

    def fail(reason, field="", step=None):
        return MappingError(reason, dataset=episode.dataset, episode_id=eid, field=field, step=step)

    length = _length(episode, fail)
    if length < 2:
        raise fail(f"{length} step(s); an episode needs at least one transition")
    success = _success(episode, mapping, fail)
    terminal = success if mapping.rewards.terminal == "success" else bool(
        np.any(_column(episode, reference(mapping.rewards.terminal)[1], fail)))
    observation = {f"image_{c.name}": _frames(episode, c, fail) for c in mapping.cameras}
    observation["state"] = np.concatenate([_part_values(episode, p, fail) for p in mapping.state], axis=1)
    action = _action(episode, mapping, length, fail)
    instruction = _instruction(episode, mapping, length, fail)
    steps = {
        "observation": observation,
        "action": action,
        "reward": _rewards(episode, mapping, length, success, fail),
        "discount": np.ones(length, np.float32),
        "is_first": np.arange(length) == 0,
        "is_last": np.arange(length) == length - 1,
        "is_terminal": (np.arange(length) == length - 1) & terminal,
        "language_instruction": instruction,
        "intervention": np.zeros(length, bool),
        "policy_version": np.full(length, -1, np.int32),
    }
    if terminal:
        steps["discount"][length - 2:] = 0.0
    if mapping.language.embedding:
        steps["language_embedding"] = _broadcast(_referenced_value(episode, mapping.language.embedding, fail),
                                                 length).astype(np.float32)
    metadata = {
        "episode_id": eid,
        "task": _text(episode, mapping.episode.task, fail) if mapping.episode.task else episode.dataset,
        "instruction": str(instruction[0]),
        "source": mapping.episode.source,
        "success": success,
        "robot": _text(episode, mapping.episode.robot, fail) if mapping.episode.robot else "",
        "operator": "",
        "file_path": _file_path(episode),
        "recorded_at": "",
    }
    try:
        return validate_episode({"steps": steps, "episode_metadata": metadata}, resolved.spec)
    except SchemaError as e:
        origin = _source_fields(mapping).get(e.field or "")
        raise fail(e.reason + (f" (made from the source's {origin})" if origin else ""), e.field or "",
                   e.step) from None


def _source_fields(mapping: RldsMapping) -> dict[str, str]:
    """Our step field -> the source fields it is made from (named in errors)."""
    keys = lambda parts: ", ".join(dict.fromkeys(f"steps/{part.key}" for part in parts))
    gripper = (mapping.gripper,) if mapping.gripper is not None else ()
    return {"observation/state": keys(mapping.state), "action": keys(mapping.action + gripper),
            **{f"observation/image_{c.name}": f"steps/{c.key}" for c in mapping.cameras}}


def iterate_mapped_episodes(source: SourceDataset | str | os.PathLike, resolved: ResolvedMapping | RldsMapping,
                            split: str = "train", *, skip_bad: bool = False) -> Iterator[Episode]:
    """Every episode of one source split in our schema, in file order: what loading code (SFT, offline)
    uses to train on an RLDS dataset without converting it. A bad episode raises MappingError, or is
    left out when `skip_bad`."""
    source = source if isinstance(source, SourceDataset) else open_source(source)
    resolved = resolved if isinstance(resolved, ResolvedMapping) else resolve(resolved, source)
    if split not in source.splits:
        raise MappingError(f"no split {split!r} (splits: {', '.join(source.splits)})", dataset=source.path)
    for episode in read_source_episodes(source, split, images=resolved.image_fields):
        try:
            yield map_episode(episode, resolved)
        except MappingError:
            if not skip_bad:
                raise


def _episode_id(episode: SourceEpisode, mapping: RldsMapping) -> str:
    if mapping.episode.id == "index":
        return f"{episode.split}-{episode.index:06d}"
    key = reference(mapping.episode.id)[1]
    value = _python(episode.metadata.get(key, ""))
    return str(value) or f"{episode.split}-{episode.index:06d}"


def _length(episode: SourceEpisode, fail) -> int:
    lengths = {key: len(value) for key, value in episode.steps.items()}
    if len(set(lengths.values())) > 1:
        key = min(lengths, key=lambda k: lengths[k])
        raise fail(f"step fields have different lengths ({sorted(set(lengths.values()))})", f"steps/{key}")
    return next(iter(lengths.values()), 0)


def _column(episode: SourceEpisode, key: str, fail) -> np.ndarray:
    if key not in episode.steps:
        raise fail("the episode has no such step field", f"steps/{key}")
    return episode.steps[key]


def _python(value):
    value = value.item() if isinstance(value, np.generic) or (isinstance(value, np.ndarray) and value.ndim == 0) \
        else value
    return value.decode() if isinstance(value, bytes) else value


def _referenced_value(episode: SourceEpisode, value: str, fail):
    kind, key = reference(value)
    if kind == "step":
        return _column(episode, key, fail)
    if kind == "metadata":
        if key not in episode.metadata:
            raise fail("the episode has no such metadata field", f"episode_metadata/{key}")
        return episode.metadata[key]
    return key  # "text:..."


def _text(episode: SourceEpisode, value: str, fail) -> str:
    found = _referenced_value(episode, value, fail)
    if isinstance(found, np.ndarray) and found.ndim:
        found = found[0]
    return str(_python(found))


def _broadcast(value, length: int) -> np.ndarray:
    value = np.asarray(value)
    return value if value.ndim == 2 and len(value) == length else np.tile(value, (length, 1))


def _success(episode: SourceEpisode, mapping: RldsMapping, fail) -> bool:
    if mapping.episode.success in ("always", "never"):
        return mapping.episode.success == "always"
    found = np.asarray(_referenced_value(episode, mapping.episode.success, fail))
    if found.dtype.kind in "SUO":
        return any(bool(_python(v)) for v in found.reshape(-1))
    return bool(np.any(found != 0))


def _frames(episode: SourceEpisode, camera, fail) -> np.ndarray:
    import tensorflow as tf

    frames = _column(episode, camera.key, fail)
    field = f"steps/{camera.key}"
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise fail(f"expected frames [T, H, W, 3], got shape {frames.shape}", field)
    if camera.crop is not None:
        top, left, height, width = camera.crop
        if top + height > frames.shape[1] or left + width > frames.shape[2]:
            raise fail(f"crop {list(camera.crop)} leaves the {frames.shape[1]}x{frames.shape[2]} frame", field)
        frames = frames[:, top:top + height, left:left + width]
    if frames.shape[1:3] == tuple(camera.size):
        return np.ascontiguousarray(frames, np.uint8)
    resized = tf.image.resize(frames, camera.size, method="area").numpy()
    return np.clip(np.round(resized), 0, 255).astype(np.uint8)


def _part_values(episode: SourceEpisode, part: FieldPart, fail) -> np.ndarray:
    values = np.asarray(_column(episode, part.key, fail))
    if values.dtype.kind not in "fiub":
        raise fail(f"expected numbers, got dtype {values.dtype}", f"steps/{part.key}")
    values = values.astype(np.float64).reshape(len(values), -1)
    start, stop = part.start or 0, values.shape[1] if part.stop is None else part.stop
    if stop > values.shape[1]:
        raise fail(f"slice [{start}, {stop}) does not fit {values.shape[1]} value(s) per step", f"steps/{part.key}")
    values = values[:, start:stop]
    if part.delta:
        difference = np.zeros_like(values)
        difference[:-1] = values[1:] - values[:-1]
        if part.wrap_angle:
            difference = (difference + np.pi) % (2 * np.pi) - np.pi
        values = difference
    return ((values - np.asarray(part.offset)) * np.asarray(part.scale)).astype(np.float32)


def _action(episode: SourceEpisode, mapping: RldsMapping, length: int, fail) -> np.ndarray:
    columns = [_part_values(episode, part, fail) for part in mapping.action]
    if mapping.gripper is not None:
        gripper = mapping.gripper
        values = np.asarray(_column(episode, gripper.key, fail)).astype(np.float64).reshape(length, -1)
        if (gripper.index or 0) >= values.shape[1]:
            raise fail(f"gripper index {gripper.index} does not fit {values.shape[1]} value(s) per step",
                       f"steps/{gripper.key}")
        raw = values[:, gripper.index or 0]
        ours = -1.0 + 2.0 * (raw - gripper.open) / (gripper.closed - gripper.open)
        if gripper.binarize:
            ours = np.where(ours > 0, 1.0, -1.0)
        columns.append(ours[:, None].astype(np.float32))
    action = np.concatenate(columns, axis=1)
    action[-1] = 0.0  # our last step holds only the final observation (padding action)
    if mapping.clip_action:
        action = np.clip(action, -1.0, 1.0)
    return action.astype(np.float32)


def _instruction(episode: SourceEpisode, mapping: RldsMapping, length: int, fail) -> np.ndarray:
    kind, key = reference(mapping.language.instruction)
    field = {"step": f"steps/{key}", "metadata": f"episode_metadata/{key}"}.get(kind, "language.instruction")
    found = _referenced_value(episode, mapping.language.instruction, fail)
    values = [str(_python(v)) for v in np.asarray(found, dtype=object).reshape(-1)]
    if len(values) == 1:
        values = values * length
    if len(values) != length:
        raise fail(f"expected one instruction per step or one per episode, got {len(values)}", field)
    values = [v.strip() or mapping.language.fallback for v in values]
    if not values[0]:
        raise fail("empty language instruction (set [language] fallback to use a default)", field)
    values = [v or values[0] for v in values]  # a step without text keeps the episode's instruction
    return np.asarray(values, dtype=object)


def _rewards(episode: SourceEpisode, mapping: RldsMapping, length: int, success: bool, fail) -> np.ndarray:
    reward = np.zeros(length, np.float32)
    if mapping.rewards.reward == "derive":
        reward[length - 2] = float(success)
        return reward
    source = np.asarray(_column(episode, reference(mapping.rewards.reward)[1], fail), np.float64).reshape(length)
    reward[:length - 1] = source[:length - 1]
    reward[length - 2] += source[length - 1]
    return reward


def _file_path(episode: SourceEpisode) -> str:
    value = episode.metadata.get("file_path")
    if value is not None and str(_python(value)):
        return str(_python(value))
    return f"{episode.dataset}:{episode.where}"

"""Reading any TFDS/RLDS dataset directory as numpy episodes, whatever its feature layout (the
source side of datasets/mapped_episodes.py).

    source = open_source("/data/bridge/0.1.0")        # layout: step/metadata fields, splits, images
    for episode in read_source_episodes(source, "train", 0, 10, images=["observation/image_0"]):
        episode.steps["observation/state"]            # flat field path -> [T, ...] array
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Iterator, Sequence

import numpy as np

from vlarft.datasets.schema import flatten, unflatten

OUR_SPLITS = {"train": "train"}  # every other source split becomes our "validation"


class MappingError(ValueError):
    """A source dataset, episode or field is not what is asked of it (by a mapping, or to be read at all)."""

    def __init__(self, reason: str, *, dataset: str, episode_id: str = "", field: str = "",
                 step: int | None = None):
        self.reason, self.dataset, self.episode_id, self.field, self.step = reason, dataset, episode_id, field, step
        where = [f"dataset {dataset!r}"]
        if episode_id:
            where.append(f"episode {episode_id!r}")
        if step is not None:
            where.append(f"step {step}")
        if field:
            where.append(f"field {field!r}")
        super().__init__(f"{', '.join(where)}: {reason}")


@dataclasses.dataclass(frozen=True)
class SourceDataset:
    """A TFDS dataset directory and its feature layout (flat field path -> (shape, dtype name))."""

    path: str
    name: str
    steps: dict[str, tuple[tuple, str]]
    metadata: dict[str, tuple[tuple, str]]
    splits: dict[str, int]  # split -> episodes
    images: tuple[str, ...] = ()  # step fields that are encoded images (decoded only when used)


@dataclasses.dataclass
class SourceEpisode:
    """One source episode: flat step columns (leading axis = steps) and flat metadata values."""

    dataset: str
    split: str
    index: int
    steps: dict[str, np.ndarray]
    metadata: dict[str, Any]

    @property
    def where(self) -> str:
        return f"{self.split}[{self.index}]"


def open_source(path: str | os.PathLike) -> SourceDataset:
    """The layout of a TFDS dataset directory (clear error when it is not one)."""
    import tensorflow_datasets as tfds

    path = os.path.abspath(os.fspath(path))
    if not os.path.exists(os.path.join(path, "dataset_info.json")):
        raise MappingError("not a TFDS dataset directory (no dataset_info.json)", dataset=path)
    builder = tfds.builder_from_directory(path)
    features = builder.info.features
    if "steps" not in features:
        raise MappingError("not an RLDS dataset: no 'steps' feature", dataset=path, field="steps")
    info = lambda tree: {k: (tuple(v.shape), np.dtype(v.np_dtype).name) for k, v in flatten(tree).items()}
    return SourceDataset(
        path=path, name=builder.info.name, steps=info(features["steps"].feature.get_tensor_info()),
        metadata=info(features["episode_metadata"].get_tensor_info()) if "episode_metadata" in features else {},
        splits={name: split.num_examples for name, split in builder.info.splits.items()},
        images=tuple(_image_fields(features["steps"].feature)))


def _image_fields(features, prefix: str = "") -> Iterator[str]:
    import tensorflow_datasets as tfds

    for key, feature in features.items():
        if isinstance(feature, tfds.features.Image):
            yield prefix + key
        elif isinstance(feature, tfds.features.FeaturesDict):
            yield from _image_fields(feature, f"{prefix}{key}/")


def read_source_episodes(source: SourceDataset, split: str, start: int = 0, stop: int | None = None,
                         images: Sequence[str] | None = None) -> Iterator[SourceEpisode]:
    """Episodes `start..stop` of one split as numpy (strings as bytes); only the image fields in
    `images` (default: all) are decoded and kept, the others are left out unread."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    stop = source.splits[split] if stop is None else stop
    skipped = [key for key in source.images if images is not None and key not in images]
    decoders = {"steps": unflatten({key: tfds.decode.SkipDecoding() for key in skipped})} if skipped else None
    dataset = tfds.builder_from_directory(source.path).as_dataset(split=f"{split}[{start}:{stop}]",
                                                                 shuffle_files=False, decoders=decoders)
    for index, episode in enumerate(dataset, start):
        steps = episode["steps"].batch(1 << 20).get_single_element()
        steps = {key: value for key, value in flatten(tf.nest.map_structure(lambda t: t.numpy(), steps)).items()
                 if key not in skipped}
        metadata = flatten(tf.nest.map_structure(lambda t: t.numpy(), dict(episode.get("episode_metadata", {}))))
        yield SourceEpisode(dataset=source.name, split=split, index=index, steps=steps, metadata=metadata)


def our_split(source_split: str) -> str:
    return OUR_SPLITS.get(source_split, "validation")


def parse_slice(item: str) -> tuple[str, int, int]:
    """"train[10:20]" -> ("train", 10, 20): the work items of the mapping job."""
    match = re.fullmatch(r"(.+)\[(\d+):(\d+)\]", item)
    if not match:
        raise ValueError(f"{item!r} is not SPLIT[START:STOP]")
    return match.group(1), int(match.group(2)), int(match.group(3))

"""An episode -> the `tf.train.Example` bytes of one RLDS record, a column at a time.

TFDS's `FeaturesDict.serialize_example` encodes an episode's steps one step and one field at a
time in Python; for a 100-step episode that is thousands of calls per episode, most of the
conversion job's time after the JPEG encoding. `EpisodeSerializer` builds the same encoded
structure a whole column at a time (camera frames: their JPEG bytes, passed through when the
recorder already encoded them as `JpegFrames`) and hands it to TFDS's own example serializer,
so the bytes are the ones `serialize_example` writes (`tests/test_conversion.py` checks that).
"""

from __future__ import annotations

import numpy as np

from vlarft.datasets.frames import JpegFrames, encode_frame
from vlarft.datasets.schema import Episode, EpisodeSpec, flatten, tfds_features, unflatten


class EpisodeSerializer:
    """Serializes validated episodes of one spec (see `schema.validate_episode`)."""

    def __init__(self, spec: EpisodeSpec):
        from tensorflow_datasets.core import example_serializer

        self.spec = spec
        self.features = tfds_features(spec)
        self._fields = spec.step_fields()
        self._serializer = example_serializer.ExampleSerializer(self.features.get_serialized_info())

    def encode(self, episode: Episode) -> dict:
        """The nested structure TFDS's `encode_example` would give, built column-wise."""
        steps = {path: self._column(value, *self._fields[path])
                 for path, value in flatten(episode["steps"]).items()}
        metadata = self.features["episode_metadata"].encode_example(episode["episode_metadata"])
        return {"steps": unflatten(steps), "episode_metadata": metadata}

    def serialize(self, episode: Episode) -> bytes:
        return self._serializer.serialize_example(self.encode(episode))

    @staticmethod
    def _column(value, shape, dtype):
        if len(shape) == 3:  # a camera: JPEG bytes per step
            return list(value.data) if isinstance(value, JpegFrames) else [encode_frame(f) for f in value]
        if dtype == "str":
            return np.asarray([v.decode() if isinstance(v, bytes) else str(v) for v in value], dtype=object)
        return np.asarray(value, dtype=np.dtype(dtype))

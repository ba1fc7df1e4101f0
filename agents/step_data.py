"""Backbone window batches of an RLDS split, for the stages where the backbone sees pixels (SFT).

Two loaders give the same batches ({"images": {camera: [B, W, H, W, 3]}, "state": [B, W, S]
normalised, "timestep_mask": [B, W], "text_ids"/"text_mask", "action": [B, A], optionally
"language_embedding"}), both reading through `datasets/reader.py`:

- `StepData` holds the decoded split in memory (each step once; a window is gathered by index
  when sampled) and samples transitions uniformly with a numpy generator, so a resumed run draws
  exactly the batches an uninterrupted one would.
- `WindowStream` streams windows from the TFDS files (`reader.window_dataset` over files read in
  parallel, decoded in parallel, a shuffle buffer of `shuffle_buffer_mb`, prefetch): memory stays
  bounded whatever the dataset's size. Resuming re-seeds the stream with the step reached.

`window_loader` picks one by `TrainConfig.data_loading` ("auto": memory when the decoded split
fits in `memory_budget_mb`).
"""

from __future__ import annotations

import os
from typing import Iterable, Iterator

import numpy as np
import rlds
import tensorflow as tf

from vlarft.agents.config import TrainConfig
from vlarft.agents.networks.text import tokenize
from vlarft.agents.observation import StateNormalizer
from vlarft.datasets import statistics
from vlarft.datasets.reader import dataset_spec, episode_dataset, iterate_episodes, open_dataset, window_dataset
from vlarft.datasets.schema import Episode


class StepData:
    """Every step of one split of an RLDS dataset, flattened across episodes, in memory."""

    def __init__(self, dataset_dir: str | os.PathLike, split: str, *, window: int, max_text_tokens: int,
                 vocab_size: int, normalizer: StateNormalizer, episodes: Iterable[Episode] | None = None):
        """`episodes`, when given, are used instead of reading `split` of `dataset_dir`, e.g. an RLDS
        dataset seen through a mapping without a conversion (`datasets.mapped_episodes`)."""
        columns: dict[str, list[np.ndarray]] = {}
        starts, instructions, is_last = [], [], []
        for episode in iterate_episodes(dataset_dir, split) if episodes is None else episodes:
            steps = episode["steps"]
            length = len(steps[rlds.IS_FIRST])
            for key, value in steps[rlds.OBSERVATION].items():
                columns.setdefault(key, []).append(value)
            columns.setdefault(rlds.ACTION, []).append(steps[rlds.ACTION])
            if "language_embedding" in steps:
                columns.setdefault("language_embedding", []).append(steps["language_embedding"])
            offset = sum(len(s) for s in starts)
            starts.append(np.full(length, offset, np.int64))
            instructions.extend(steps["language_instruction"])
            is_last.append(steps[rlds.IS_LAST])
        if not starts:
            raise ValueError(f"{dataset_dir}: split {split!r} has no episodes")
        self.arrays = {}
        for key in list(columns):  # one column at a time: the peak is the data + its largest column
            self.arrays[key] = np.concatenate(columns.pop(key))
        self.arrays["state"] = normalizer(self.arrays["state"]).astype(np.float32)
        self.episode_start = np.concatenate(starts)
        self.text_ids, self.text_mask = tokenize(list(instructions), max_text_tokens, vocab_size)
        self.window = window
        self.cameras = tuple(sorted(k[len("image_"):] for k in self.arrays if k.startswith("image_")))
        self.transitions = np.flatnonzero(~np.concatenate(is_last))  # steps with a real action

    def __len__(self) -> int:
        return len(self.episode_start)

    def batch(self, indices: np.ndarray) -> dict:
        """Windows ending at the given global step indices, plus their actions and instructions."""
        offsets = np.arange(self.window) - (self.window - 1)
        raw = indices[:, None] + offsets[None, :]
        mask = raw >= self.episode_start[indices][:, None]
        frames = np.where(mask, raw, self.episode_start[indices][:, None])
        return {
            "images": {cam: self.arrays[f"image_{cam}"][frames] for cam in self.cameras},
            "state": self.arrays["state"][frames],
            "timestep_mask": mask,
            "text_ids": self.text_ids[indices],
            "text_mask": self.text_mask[indices],
            "action": self.arrays[rlds.ACTION][indices],
            **({"language_embedding": self.arrays["language_embedding"][indices]}
               if "language_embedding" in self.arrays else {}),
        }

    def sample(self, rng: np.random.Generator, batch_size: int) -> dict:
        """A uniformly random batch of transitions (steps with a real action)."""
        return self.batch(rng.choice(self.transitions, size=batch_size))

    def iterate(self, batch_size: int) -> Iterator[tuple[int, dict]]:
        """Every transition once, in order, as (count, batch)."""
        for start in range(0, len(self.transitions), batch_size):
            chunk = self.transitions[start:start + batch_size]
            yield len(chunk), self.batch(chunk)


AUTOTUNE_RAM_BUDGET = 256 << 20  # bytes tf.data's own prefetch buffers may hold in a stream


class WindowStream:
    """The transitions' windows of one split streamed from disk with tf.data (bounded memory).

    `shuffled=True`: an endless stream, files in a seeded random order read `parallel_files` at a
    time, windows mixed in a shuffle buffer of about `shuffle_buffer_mb` decoded bytes.
    `shuffled=False`: every transition once, in file order (evaluation).
    """

    def __init__(self, dataset_dir: str | os.PathLike, split: str, *, window: int, max_text_tokens: int,
                 vocab_size: int, normalizer: StateNormalizer, shuffled: bool = True, seed: int = 0,
                 shuffle_buffer_mb: int = 512, parallel_files: int = 4):
        spec = dataset_spec(dataset_dir)
        self.cameras = tuple(sorted(spec.cameras))
        self.window, self.normalizer = window, normalizer
        self.max_text_tokens, self.vocab_size = max_text_tokens, vocab_size
        self._tokens: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}
        keys = [f"image_{cam}" for cam in self.cameras] + ["state"]
        step_keys = (rlds.ACTION, rlds.IS_LAST, "language_instruction") + (
            ("language_embedding",) if spec.language_embedding_dim else ())
        self.window_bytes = window * (window_frame_bytes(spec) + 4 * len(step_keys))
        self.shuffle_buffer = max(1, (shuffle_buffer_mb << 20) // self.window_bytes)
        self.shuffled = shuffled
        parallel_files = parallel_files if shuffled else 1  # in order: one file, one episode at a time

        episodes = episode_dataset(dataset_dir, split, shuffle_files=shuffled, seed=seed,
                                   parallel_files=parallel_files)
        if shuffled:
            episodes = episodes.repeat()
        windows = episodes.interleave(
            lambda episode: window_dataset(episode[rlds.STEPS], window, keys, step_keys),
            cycle_length=parallel_files, num_parallel_calls=parallel_files, deterministic=True)
        self._windows = windows.filter(lambda w: tf.logical_not(w[rlds.IS_LAST]))
        if shuffled:
            self._windows = self._windows.shuffle(self.shuffle_buffer, seed=seed)
        # tf.data's autotuner may otherwise grow its buffers up to half the machine's RAM while a
        # slow consumer (a training step) lets them fill
        options = tf.data.Options()
        options.autotune.ram_budget = AUTOTUNE_RAM_BUDGET
        self._windows = self._windows.with_options(options)

    def batches(self, batch_size: int) -> Iterator[dict]:
        """Batches of `batch_size` windows (the last one smaller when not shuffled)."""
        dataset = self._windows.batch(batch_size, drop_remainder=self.shuffled).prefetch(2)
        for raw in dataset.as_numpy_iterator():
            yield self._to_batch(raw)

    def iterate(self, batch_size: int) -> Iterator[tuple[int, dict]]:
        """Every transition once, in order, as (count, batch) (like `StepData.iterate`)."""
        for batch in self.batches(batch_size):
            yield len(batch["action"]), batch

    def _to_batch(self, raw: dict) -> dict:
        observation = raw["observation"]
        ids, mask = zip(*(self._tokenized(text) for text in raw["language_instruction"]))
        batch = {
            "images": {cam: observation[f"image_{cam}"] for cam in self.cameras},
            "state": self.normalizer(observation["state"]).astype(np.float32),
            "timestep_mask": raw["timestep_mask"],
            "text_ids": np.stack(ids),
            "text_mask": np.stack(mask),
            "action": raw[rlds.ACTION],
        }
        if "language_embedding" in raw:
            batch["language_embedding"] = raw["language_embedding"]
        return batch

    def _tokenized(self, text: bytes) -> tuple[np.ndarray, np.ndarray]:
        if text not in self._tokens:
            ids, mask = tokenize(text, self.max_text_tokens, self.vocab_size)
            self._tokens[text] = (ids[0], mask[0])
        return self._tokens[text]


def window_frame_bytes(spec) -> int:
    """Decoded bytes of one frame: every camera image and the state."""
    return sum(h * w * 3 for h, w in spec.cameras.values()) + 4 * spec.state_dim


def decoded_split_bytes(dataset_dir: str | os.PathLike, split: str) -> int:
    """Estimated decoded size of a split held by `StepData`: its steps (from the statistics'
    step count of the train split, scaled by episodes) times the bytes of a frame."""
    info = open_dataset(dataset_dir).info
    stats = statistics.load_statistics(dataset_dir)
    train_episodes = max(1, info.splits["train"].num_examples) if "train" in info.splits else 1
    steps = stats.get("num_steps", 0) * info.splits[split].num_examples / train_episodes
    return int(steps * window_frame_bytes(dataset_spec(dataset_dir)))


def use_stream(dataset_dir: str | os.PathLike, splits: tuple[str, ...], train: TrainConfig) -> bool:
    """Whether SFT streams (`data_loading` "stream", or "auto" with the splits over the budget)."""
    if train.data_loading not in ("auto", "memory", "stream"):
        raise ValueError(f"train.data_loading={train.data_loading!r}: use 'auto', 'memory' or 'stream'")
    if train.data_loading != "auto":
        return train.data_loading == "stream"
    return sum(decoded_split_bytes(dataset_dir, s) for s in splits) > train.memory_budget_mb << 20

"""Train the reward classifier on recorded success / failure frames and report held-out figures.

    python tools/train_reward_classifier.py --data_dir=frames/pick_cube --out_dir=runs/reward_pick_cube
    python tools/train_reward_classifier.py --data_dir=frames/a --data_dir=frames/b --cameras=wrist --steps=3000 ...

Reads the frame files of `tools/record_success_fail.py`, splits EPISODES (never frames of one
episode) into train and held-out sets (stratified: episodes with and without success frames are
split separately), trains `agents/reward_classifier.py` with a progress bar and TensorBoard
(`<out_dir>/tensorboard`: train loss/accuracy, held-out figures every --eval_every steps), prints
held-out precision / recall / accuracy at 0.5 and a small threshold sweep, and saves the
classifier to --out_dir (`RewardClassifierWrapper(env, classifier_dir=OUT_DIR)` loads it).
The last line of standard output is a JSON object of the held-out figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from vlarft.agents.cli import run_cli  # noqa: E402
from vlarft.agents.reward_classifier import RewardClassifierConfig  # noqa: E402
from vlarft.datasets.raw_episodes import list_raw_episodes  # noqa: E402
from vlarft.tools.record_success_fail import LabelledFrames, read_labelled_frames  # noqa: E402

SWEEP = (0.1, 0.3, 0.5, 0.7, 0.9)


@dataclasses.dataclass
class FrameSet:
    """Frames of several episodes: classifier images {`image_<camera>`: [N, H, W, 3]}, labels [N]."""

    images: dict[str, np.ndarray]
    labels: np.ndarray
    episodes: int

    def __len__(self) -> int:
        return len(self.labels)


def load_episodes(data_dirs: Sequence[str], progress: bool = True) -> list[LabelledFrames]:
    """Every frame file of `data_dirs` (a damaged file: RawEpisodeError naming it)."""
    from tqdm import tqdm

    paths = [p for d in data_dirs for p in list_raw_episodes(d)]
    if not paths:
        raise ValueError(f"no frame files (*.npz) in {list(data_dirs)}; record some with tools/record_success_fail.py")
    return [read_labelled_frames(p) for p in tqdm(paths, desc="reading frames", unit="file", disable=not progress,
                                                   file=sys.stderr)]


def split_episodes(episodes: Sequence[LabelledFrames], heldout_fraction: float,
                   seed: int) -> tuple[list[LabelledFrames], list[LabelledFrames]]:
    """(train, held-out) by episode; episodes with and without success frames split separately."""
    if not 0.0 < heldout_fraction < 1.0:
        raise ValueError(f"--heldout_fraction must be in (0, 1), got {heldout_fraction}")
    if len(episodes) < 2:
        raise ValueError(f"need at least 2 episodes to hold one out, got {len(episodes)}")
    rng = np.random.default_rng(seed)
    train, heldout = [], []
    for group in ([e for e in episodes if e.success_label.any()], [e for e in episodes if not e.success_label.any()]):
        order = rng.permutation(len(group))
        count = min(len(group) - 1, math.ceil(heldout_fraction * len(group))) if len(group) > 1 else 0
        heldout += [group[i] for i in order[:count]]
        train += [group[i] for i in order[count:]]
    if not heldout:  # e.g. one episode with and one without success frames
        heldout.append(train.pop())
    return train, heldout


def frame_set(episodes: Sequence[LabelledFrames], config: RewardClassifierConfig) -> FrameSet:
    """The classifier's cameras of `episodes`, concatenated and resized to `config.image_size`."""
    from vlarft.agents.reward_classifier import image_keys, resize_images

    images = {}
    for key in image_keys(config):
        columns = []
        for episode in episodes:
            if key not in episode.observation:
                raise ValueError(f"{episode.metadata.get('file_path', '?')}: no {key} (has "
                                 f"{sorted(k for k in episode.observation if k.startswith('image_'))})")
            column = episode.observation[key]
            if tuple(column.shape[1:3]) != tuple(config.image_size):
                column = np.asarray(resize_images(column, config.image_size)).round().astype(np.uint8)
            columns.append(column)
        images[key] = np.concatenate(columns)
    return FrameSet(images, np.concatenate([e.success_label for e in episodes]), len(episodes))


def binary_metrics(probabilities: np.ndarray, labels: np.ndarray, threshold: float) -> dict:
    """Precision, recall, accuracy, F1 and counts of `probabilities >= threshold` against `labels`."""
    predicted, labels = np.asarray(probabilities) >= threshold, np.asarray(labels, bool)
    tp, fp = int(np.sum(predicted & labels)), int(np.sum(predicted & ~labels))
    fn, tn = int(np.sum(~predicted & labels)), int(np.sum(~predicted & ~labels))
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
    return {"threshold": threshold, "precision": precision, "recall": recall,
            "accuracy": (tp + tn) / max(len(labels), 1), "f1": f1, "tp": tp, "fp": fp, "fn": fn, "tn": tn}


def evaluate(classifier, frames: FrameSet) -> dict:
    """Held-out figures at 0.5 plus the threshold sweep."""
    probabilities = classifier.predict_proba(frames.images)
    sweep = [binary_metrics(probabilities, frames.labels, t) for t in SWEEP]
    return {**binary_metrics(probabilities, frames.labels, 0.5), "positive_rate": float(frames.labels.mean()),
            "frames": len(frames), "episodes": frames.episodes, "sweep": sweep}


def train(config: RewardClassifierConfig, train_set: FrameSet, heldout_set: FrameSet, out_dir: str,
          eval_every: int = 500, log_every: int = 25, progress: bool = True):
    """Trains `config.steps` updates; returns (TrainedClassifier, final held-out figures)."""
    import jax

    from vlarft.agents.metrics_log import TrainingLog, check_finite
    from vlarft.agents.reward_classifier import BalancedSampler, TrainedClassifier, init_train_state, make_train_step

    if config.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {config.steps}")
    sampler = BalancedSampler(train_set.labels, config.batch_size, config.positive_fraction, config.seed)
    state, step_fn = init_train_state(config), make_train_step(config)
    classifier = TrainedClassifier(config, state.params)  # compiled once, parameters swapped in
    log = TrainingLog(out_dir, config.steps, 0, "reward classifier", show_progress=progress)
    try:
        for step in range(1, config.steps + 1):
            index = sampler.sample()
            state, metrics = step_fn(state, {k: v[index] for k, v in train_set.images.items()},
                                     train_set.labels[index])
            if step % log_every == 0 or step == config.steps:
                metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
                check_finite(metrics, step)
                rate = log.progress(step, metrics)
                log.bar.set_postfix(loss=f"{metrics['loss']:.3g}", acc=f"{metrics['accuracy']:.2f}",
                                    steps_s=f"{rate:.1f}")
                log.scalars(step, {**metrics, "steps_per_s": rate}, prefix="train/")
            if (eval_every and step % eval_every == 0) or step == config.steps:
                classifier.params = state.params
                figures = evaluate(classifier, heldout_set)
                log.scalars(step, {k: v for k, v in figures.items() if k != "threshold"
                                   and isinstance(v, float) and math.isfinite(v)}, prefix="heldout/")
    finally:
        log.close()
    return classifier, figures


def print_report(figures: dict) -> None:
    """The held-out figures and the sweep as a table on standard output."""
    from rich.console import Console
    from rich.table import Table

    fmt = lambda v: "—" if isinstance(v, float) and not math.isfinite(v) else f"{v:.3f}"
    table = Table(title=f"held-out: {figures['frames']} frames of {figures['episodes']} episode(s), "
                        f"{figures['positive_rate']:.1%} success frames")
    for column in ("threshold", "precision", "recall", "accuracy", "f1", "tp", "fp", "fn", "tn"):
        table.add_column(column, justify="right")
    for row in figures["sweep"]:
        table.add_row(*(fmt(row[c]) if isinstance(row[c], float) else str(row[c])
                        for c in ("threshold", "precision", "recall", "accuracy", "f1", "tp", "fp", "fn", "tn")))
    Console(file=sys.stdout, width=100).print(table)


def run(args: argparse.Namespace) -> dict:
    """Load, split, train, report, save; returns the JSON summary."""
    from vlarft.agents.reward_classifier import save_classifier

    start = time.time()
    episodes = load_episodes(args.data_dir, progress=not args.no_progress)
    spec = episodes[0].spec
    cameras = tuple(c for c in args.cameras.split(",") if c) or tuple(spec.cameras)
    unknown = [c for c in cameras if c not in spec.cameras]
    if unknown:
        raise ValueError(f"--cameras: {unknown} not recorded; cameras: {sorted(spec.cameras)}")
    size = (args.image_size,) * 2 if args.image_size else tuple(spec.cameras[cameras[0]])
    overrides = {k: v for k, v in dict(steps=args.steps, batch_size=args.batch_size, learning_rate=args.learning_rate,
                                       seed=args.seed).items() if v is not None}
    if args.encoder_widths:
        overrides["encoder_widths"] = tuple(int(w) for w in args.encoder_widths.split(","))
    config = dataclasses.replace(RewardClassifierConfig(), cameras=cameras, image_size=size, **overrides)
    train_eps, heldout_eps = split_episodes(episodes, args.heldout_fraction, config.seed)
    train_set, heldout_set = frame_set(train_eps, config), frame_set(heldout_eps, config)
    print(f"train: {len(train_set)} frames ({int(train_set.labels.sum())} success) of {len(train_eps)} episode(s); "
          f"held-out: {len(heldout_set)} frames ({int(heldout_set.labels.sum())} success) of {len(heldout_eps)}",
          file=sys.stderr)
    classifier, figures = train(config, train_set, heldout_set, args.out_dir, eval_every=args.eval_every,
                                progress=not args.no_progress)
    print_report(figures)
    meta = {"heldout": figures, "data_dirs": [str(Path(d).resolve()) for d in args.data_dir],
            "train_files": [e.metadata.get("file_path", "") for e in train_eps],
            "heldout_files": [e.metadata.get("file_path", "") for e in heldout_eps],
            "task": episodes[0].metadata.get("task", "")}
    save_classifier(args.out_dir, classifier.params, config, meta)
    summary = {k: v for k, v in figures.items() if k != "sweep"} | {"sweep": figures["sweep"]}
    return {**summary, "out_dir": args.out_dir, "wall_s": round(time.time() - start, 2)}  # NaN -> null by run_cli


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    defaults = RewardClassifierConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", action="append", required=True, help="frame files directory (repeatable)")
    parser.add_argument("--out_dir", required=True, help="classifier directory (+ tensorboard/)")
    parser.add_argument("--cameras", default="", help="comma-separated cameras (default: all recorded)")
    parser.add_argument("--image_size", type=int, default=0, help="square input size (0: the recorded size)")
    parser.add_argument("--steps", type=int, default=None, help=f"updates (default {defaults.steps})")
    parser.add_argument("--batch_size", type=int, default=None,
                        help=f"frames per update (default {defaults.batch_size})")
    parser.add_argument("--learning_rate", type=float, default=None, help=f"Adam (default {defaults.learning_rate})")
    parser.add_argument("--encoder_widths", default="", help="four ResNet stage widths, e.g. 16,32,64,128")
    parser.add_argument("--heldout_fraction", type=float, default=0.2, help="share of episodes held out")
    parser.add_argument("--eval_every", type=int, default=500,
                        help="updates between held-out evaluations (0: at the end only)")
    parser.add_argument("--seed", type=int, default=None,
                        help=f"split, init and sampling seed (default {defaults.seed})")
    parser.add_argument("--no_progress", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # errors: damaged, missing or unwritable files, bad flags, one-class data
    return run_cli(lambda: run(args), "interrupted: nothing was saved", errors=(ValueError, OSError))


if __name__ == "__main__":
    sys.exit(main())

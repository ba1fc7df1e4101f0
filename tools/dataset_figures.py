"""Pictures of dataset episodes (for tools/show_dataset.py): a contact sheet (sampled frames of every
camera beside the action/state/reward curves) as PNG, the same as an MP4 with a moving cursor on
the curves, and the dataset statistics as per-dimension plots."""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np
from matplotlib.ticker import MaxNLocator

from vlarft.agents.video import camera_mosaic, write_video
from vlarft.agents.plots import _figure, _save
from vlarft.datasets.schema import Episode
from vlarft.robot_io.contract import STATE_DIM, STATE_LAYOUT

ACTION_NAMES = ("dx", "dy", "dz", "drx", "dry", "drz", "gripper")  # robot_io.contract's action


def default_names(prefix: str, count: int) -> tuple[str, ...]:
    """Dimension names when a dataset does not carry its own: our robots' layouts, else prefix[i]."""
    if prefix == "state" and count == STATE_DIM:
        return tuple(name if n == 1 else f"{name}[{i}]" for name, n in STATE_LAYOUT for i in range(n))
    if prefix == "action" and count == len(ACTION_NAMES):
        return ACTION_NAMES
    return tuple(f"{prefix}[{i}]" for i in range(count))


def _draw_curves(axes_column: Sequence, episode: Episode, names: Mapping[str, Sequence[str]]) -> None:
    steps = episode["steps"]
    length = len(steps["is_first"])
    t = np.arange(length)
    action_axes, state_axes, reward_axes = axes_column
    for axes, key, values in ((action_axes, "action", steps["action"][:-1]),
                              (state_axes, "state", steps["observation"]["state"])):
        labels = names.get(key) or default_names(key, values.shape[1])
        for d in range(values.shape[1]):
            axes.plot(t[:len(values)], values[:, d], linewidth=1, label=labels[d] if d < len(labels) else str(d))
        axes.set_ylabel(key)
        if values.shape[1] <= 12:
            axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="x-small", frameon=False)
    reward_axes.bar(t, steps["reward"], width=0.6, color="tab:green", label="reward")
    interventions = np.flatnonzero(steps["intervention"])
    if len(interventions):
        reward_axes.scatter(interventions, np.zeros(len(interventions)), marker="|", color="tab:red",
                            label="intervention")
    if steps["is_terminal"][-1]:
        reward_axes.axvline(length - 1, color="black", linestyle=":", label="terminal")
    reward_axes.set(ylabel="reward", xlabel="step")
    reward_axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="x-small", frameon=False)
    for axes in axes_column:
        axes.set_xlim(-0.5, length - 0.5)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(True, alpha=0.3)


def _title(episode: Episode) -> str:
    meta = episode["episode_metadata"]
    return (f"{meta['episode_id']}: {meta['instruction']!r} ({len(episode['steps']['is_first'])} steps, "
            f"{'success' if meta['success'] else 'no success'}, {meta['source']})")


def contact_sheet(episode: Episode, path: str | os.PathLike, *, frames: int = 8,
                  names: Mapping[str, Sequence[str]] | None = None) -> str:
    """PNG: `frames` evenly spaced frames of every camera (rows) left, the curves right."""
    steps = episode["steps"]
    length = len(steps["is_first"])
    chosen = np.unique(np.linspace(0, length - 1, min(frames, length)).round().astype(int))
    cameras = sorted(k for k in steps["observation"] if k.startswith("image_"))
    figure = _figure(width=2.0 * len(chosen) + 6.0, height=max(4.5, 1.8 * len(cameras) + 1.0))
    outer = figure.add_gridspec(1, 2, width_ratios=[len(chosen), max(3.5, 0.6 * len(chosen))])
    grid = outer[0].subgridspec(len(cameras), len(chosen))
    for row, camera in enumerate(cameras):
        for col, t in enumerate(chosen):
            axes = figure.add_subplot(grid[row, col])
            axes.imshow(steps["observation"][camera][t])
            axes.set_xticks([])
            axes.set_yticks([])
            if row == 0:
                axes.set_title(f"t={t}", fontsize="small")
            if col == 0:
                axes.set_ylabel(camera[len("image_"):], fontsize="small")
    curves = outer[1].subgridspec(3, 1)
    column = [figure.add_subplot(curves[i]) for i in range(3)]
    _draw_curves(column, episode, names or {})
    for axes in column:
        for t in chosen:
            axes.axvline(t, color="grey", alpha=0.25, linewidth=0.8)
    figure.suptitle(_title(episode), fontsize="medium")
    return _save(figure, path)


def episode_video(episode: Episode, path: str | os.PathLike, *, fps: float = 10.0,
                  names: Mapping[str, Sequence[str]] | None = None) -> str:
    """MP4: every step's cameras side by side, beside the curves with a cursor at that step."""
    steps = episode["steps"]
    length = len(steps["is_first"])
    mosaics = [camera_mosaic({k: v[t] for k, v in steps["observation"].items() if k.startswith("image_")})
               for t in range(length)]
    figure = _figure(width=6.4, height=4.8)
    column = figure.subplots(3, 1, sharex=True)
    _draw_curves(column, episode, names or {})
    figure.suptitle(_title(episode), fontsize="small")
    figure.canvas.draw()
    curves = np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()
    height = curves.shape[0]
    # the cursor's pixel column per step, from the bottom axes' data -> display transform
    xs = column[-1].transData.transform(np.stack([np.arange(length), np.zeros(length)], 1))[:, 0].round().astype(int)
    top = min(int(height - a.get_window_extent().y1) for a in column)
    bottom = max(int(height - a.get_window_extent().y0) for a in column)
    scale = max(1, height // max(m.shape[0] for m in mosaics))
    frames = []
    for t, mosaic in enumerate(mosaics):
        big = np.repeat(np.repeat(mosaic, scale, axis=0), scale, axis=1)
        panel = np.full((height, big.shape[1], 3), 255, np.uint8)
        offset = (height - min(height, big.shape[0])) // 2
        panel[offset:offset + big.shape[0]] = big[:height]
        marked = curves.copy()
        x = int(np.clip(xs[t], 0, marked.shape[1] - 2))
        marked[top:bottom, x:x + 2] = (220, 30, 30)
        frames.append(np.concatenate([panel, marked], axis=1))
    return write_video(frames, os.fspath(path), fps=fps)


def statistics_plots(stats: Mapping, out_dir: str | os.PathLike,
                     names: Mapping[str, Sequence[str]] | None = None) -> list[str]:
    """One PNG per summarised key (`action`, `state`): per dimension mean +- std, p01..p99 and min/max."""
    written = []
    for key in ("action", "state"):
        summary = stats.get(key)
        if not summary:
            continue
        mean, std = np.asarray(summary["mean"]), np.asarray(summary["std"])
        dims = np.arange(len(mean))
        labels = (names or {}).get(key) or default_names(key, len(mean))
        figure = _figure(width=max(6.4, 0.45 * len(mean) + 2), height=4.0)
        axes = figure.add_subplot()
        axes.vlines(dims, summary["p01"], summary["p99"], color="tab:blue", alpha=0.35, linewidth=6,
                    label="p01..p99")
        axes.errorbar(dims, mean, yerr=std, fmt="o", color="tab:blue", capsize=3, label="mean +- std")
        axes.scatter(dims, summary["min"], marker="v", color="grey", s=14, label="min")
        axes.scatter(dims, summary["max"], marker="^", color="grey", s=14, label="max")
        axes.set_xticks(dims, labels, rotation=60, ha="right", fontsize="small")
        count = stats.get("num_transitions" if key == "action" else "num_steps", "?")
        axes.set(title=f"{key} statistics over {count} {'transitions' if key == 'action' else 'steps'}")
        axes.grid(True, alpha=0.3)
        axes.legend(loc="best", fontsize="x-small")
        written.append(_save(figure, os.path.join(os.fspath(out_dir), f"statistics_{key}.png")))
    return written
